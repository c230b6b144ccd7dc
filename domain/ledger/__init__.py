"""The ledger: what makes the history tamper-evident, as pure functions over stored bytes.

Three formats are promises to every auditor who kept a head or a proof, so they are
written down here once (the stand-alone checker, scripts/check_ledger_proof.py, repeats
them in its own words because it must run off the host without this package):

- **An event's digest** (chain.py) is the RFC 6962 leaf hash of its *leaf input*:
  ``SHA-256(0x00 || originator_id_hex || 0x00 || version || 0x00 || topic || 0x00 || state)``,
  where the id is the aggregate's 32 lowercase hex digits, the version is decimal ASCII,
  the topic is UTF-8, and the state is the stored bytes exactly as the store holds them.
- **The chain**: every event written since chaining began stores, as the first key of its
  JSON state, ``"_prev"``: the hex digest of the previous version of its own aggregate (64
  zeros for version 1). An incarnation is one aggregate, so concurrent writers never
  contend for a link: the store's (aggregate, version) key already lets one of them win.
- **A signed tree head** (head.py) names a tree size, the position of its last event, the
  RFC 6962 Merkle root over the digests of every event up to that position in position
  order (merkle.py), the digest of its tips (each aggregate's last event in the range the
  head is the first to cover), the signing node, the time and the Ed25519 public key; the
  signature covers the canonical JSON of all of that.
"""
