"""Wire compatibility, connecting, and the server's socket file."""

from __future__ import annotations

import asyncio
import socket
import stat
import uuid
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty

from adapters.proto import task_pb2, ttrpc_pb2
from adapters.ttrpc.client import TtrpcClient
from adapters.ttrpc.errors import ProtocolError
from adapters.ttrpc.framing import (
    MAX_STREAM_ID,
    MESSAGE_TYPE_RESPONSE,
    encode_frame,
    pack_header,
)
from adapters.ttrpc.server import TtrpcServer
from domain.errors import (
    AlreadyExistsError,
    UnavailableError,
)
from tests.adapters.conftest import (
    SERVICE,
    STEP,
    SYSTEM_PYTHON,
    FakeTask,
    Served,
    connect_frame,
    raw_server,
)
from tests.adapters.test_ttrpc_framing import GOLDEN_CONNECT_REPLY, GOLDEN_CONNECT_REQUEST


class TestWireCompatibility:
    async def test_client_sends_the_golden_connect_frame(self, tmp_path: Path) -> None:
        path = str(tmp_path / "golden.sock")
        async with raw_server(path, reply=GOLDEN_CONNECT_REPLY) as frames:
            async with await TtrpcClient.connect(f"unix://{path}") as client:
                # No deadline: the capture has no timeout_nano, and a deadline adds one.
                response = await client.call(
                    SERVICE,
                    "Connect",
                    task_pb2.ConnectRequest(id="sf1"),
                    task_pb2.ConnectResponse,
                    timeout=None,
                )
        header, payload = frames[0]
        assert pack_header(header) + payload == GOLDEN_CONNECT_REQUEST
        assert response.shim_pid == 11084

    async def test_undecodable_response_is_a_protocol_error(self, tmp_path: Path) -> None:
        path = str(tmp_path / "bad.sock")
        truncated = ttrpc_pb2.Response(payload=b"\x0a\x05ab").SerializeToString()
        async with raw_server(path, reply=encode_frame(0, MESSAGE_TYPE_RESPONSE, truncated)):
            async with await TtrpcClient.connect(path) as client:
                with pytest.raises(ProtocolError, match="ConnectResponse"):
                    await client.call(
                        SERVICE,
                        "Connect",
                        task_pb2.ConnectRequest(),
                        task_pb2.ConnectResponse,
                        timeout=STEP,
                    )

    async def test_stream_ids_are_odd_and_wrap_inside_uint32(self, tmp_path: Path) -> None:
        path = str(tmp_path / "ids.sock")
        empty_reply = encode_frame(0, MESSAGE_TYPE_RESPONSE, b"")
        async with raw_server(path, reply=empty_reply) as frames:
            async with await TtrpcClient.connect(path) as client:
                for _ in range(2):
                    await client.call(
                        SERVICE, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=STEP
                    )
                client._next_stream_id = MAX_STREAM_ID  # jump to the end of the id space
                for _ in range(2):
                    await client.call(
                        SERVICE, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=STEP
                    )
        assert [h.stream_id for h, _ in frames] == [1, 3, MAX_STREAM_ID, 1]


class TestConnect:
    async def test_missing_socket_is_unavailable(self, tmp_path: Path) -> None:
        address = f"unix://{tmp_path}/nothing.sock"
        with pytest.raises(UnavailableError, match="nothing.sock"):
            await TtrpcClient.connect(address)

    async def test_empty_address_is_unavailable(self) -> None:
        with pytest.raises(UnavailableError, match="missing address"):
            await TtrpcClient.connect("")

    async def test_abstract_socket_without_scheme(self) -> None:
        assert SYSTEM_PYTHON is not None, "needs /usr/bin/python3, runnable by another uid"
        name = f"shimledger-test-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + name)
        listener.listen()
        server = TtrpcServer()
        FakeTask().register(server)
        async with server:
            await server.start_socket(listener)
            async with await TtrpcClient.connect(name) as client:
                response = await client.call(
                    SERVICE,
                    "Connect",
                    task_pb2.ConnectRequest(id="abs"),
                    task_pb2.ConnectResponse,
                    timeout=STEP,
                )
        assert response.version == "abs"


class TestServerSocket:
    async def test_socket_mode_and_removal(self, tmp_path: Path) -> None:
        path = tmp_path / "mode.sock"
        async with TtrpcServer() as server:
            await server.start_unix(str(path))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not path.exists()

    async def test_refuses_a_live_socket(self, served: Served) -> None:
        with pytest.raises(AlreadyExistsError, match="already listening"):
            await TtrpcServer().start_unix(served.path)
        async with await TtrpcClient.connect(served.path) as client:
            await client.call(SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP)

    async def test_replaces_a_stale_socket(self, tmp_path: Path) -> None:
        path = str(tmp_path / "stale.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        server = TtrpcServer()
        FakeTask().register(server)
        async with server:
            await server.start_unix(path)
            async with await TtrpcClient.connect(path) as client:
                await client.call(
                    SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP
                )

    async def test_refuses_a_regular_file(self, tmp_path: Path) -> None:
        path = tmp_path / "file"
        path.write_text("keep me")
        with pytest.raises(AlreadyExistsError):
            await TtrpcServer().start_unix(str(path))
        assert path.read_text() == "keep me"

    @pytest.mark.usefixtures("real")
    @pytest.mark.parametrize(
        "credentials",
        [{"user": 65534}, {"group": 65534}],
        ids=["another uid", "our uid, another gid"],
    )
    async def test_rejects_peers_of_another_user(
        self, caplog: pytest.LogCaptureFixture, credentials: dict[str, int]
    ) -> None:
        # Like ttrpc's UnixSocketRequireSameUser: effective uid and gid must both be ours.
        name = f"shimledger-test-{uuid.uuid4().hex}"
        server = TtrpcServer()
        FakeTask().register(server)
        script = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "s.connect('\\0'+sys.argv[1])\n"
            "s.settimeout(5)\n"
            "try:\n"
            "    s.sendall(bytes.fromhex(sys.argv[2]))\n"
            "    data=s.recv(100)\n"
            "except (BrokenPipeError, ConnectionResetError):\n"
            "    data=b''  # the server hung up first: rejected either way\n"
            "sys.stdout.write(data.hex())\n"
        )
        async with server:
            await server.start(name)  # abstract: no file permissions stand in the way
            proc = await asyncio.create_subprocess_exec(
                SYSTEM_PYTHON,
                "-I",
                "-c",
                script,
                name,
                connect_frame(1).hex(),
                **credentials,  # type: ignore[arg-type]
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(STEP * 2):
                out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out == b""  # closed (or reset) without an answer
        assert "rejecting peer" in caplog.text


class TestServerAddresses:
    async def test_serves_an_abstract_address(self) -> None:
        name = f"shimledger-test-{uuid.uuid4().hex}"
        server = TtrpcServer()
        FakeTask().register(server)
        async with server:
            await server.start(name)  # neither unix:// nor a leading /: abstract
            async with await TtrpcClient.connect(name) as client:
                response = await client.call(
                    SERVICE,
                    "Connect",
                    task_pb2.ConnectRequest(id="abstract"),
                    task_pb2.ConnectResponse,
                    timeout=STEP,
                )
            assert response.version == "abstract"
            assert "SERVING" in repr(server)
            with pytest.raises(AlreadyExistsError, match=f"already listening on @{name}"):
                await TtrpcServer().start(name)
        async with TtrpcServer() as again:  # closing released the name
            await again.start(name)

    async def test_serves_a_unix_scheme_address(self, tmp_path: Path) -> None:
        path = tmp_path / "scheme.sock"
        server = TtrpcServer()
        FakeTask().register(server)
        async with server:
            await server.start(f"unix://{path}")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            async with await TtrpcClient.connect(f"unix://{path}") as client:
                await client.call(
                    SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP
                )
        assert not path.exists()
