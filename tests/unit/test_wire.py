"""What crosses the wire: order checks, error round trips through json and serpent, the remote guard."""

import threading
import types

import pytest
from Pyro5.serializers import JsonSerializer, SerializerBase, SerpentSerializer

from pyromarket import errors, rpc
from pyromarket.errors import (ConflictingRequest, InvalidRequest, MarketError, Unavailable,
                               UnknownProduct)
from pyromarket.eventlog import EventLog, stamp
from pyromarket.orders import check

PRODUCTS = ("salt", "fish")


@pytest.mark.parametrize("qty", [0, -1, 101, 10**12, 1.5, "3", None, True])
def test_bad_quantities_are_invalid(qty):
    with pytest.raises(InvalidRequest, match="quantity"):
        check("buy", "salt", qty, "r1", products=PRODUCTS, max_qty=100)


@pytest.mark.parametrize("product", ["gold", "", 3, None, ["salt"]])
def test_bad_products_are_refused(product):
    with pytest.raises(InvalidRequest):
        check("buy", product, 1, "r1", products=PRODUCTS, max_qty=100)


def test_unknown_product_is_its_own_error():
    with pytest.raises(UnknownProduct, match="gold"):
        check("sell", "gold", 1, "r1", products=PRODUCTS, max_qty=100)


@pytest.mark.parametrize("rid", ["", 5, None, "x" * 200])
def test_bad_request_ids_are_refused(rid):
    with pytest.raises(InvalidRequest, match="request_id"):
        check("buy", "salt", 1, rid, products=PRODUCTS, max_qty=100)


@pytest.mark.parametrize("rid", ["\ud800", "id-\udcff", "two\nlines", "tab\there", "nul\x00"])
def test_request_ids_that_no_log_or_ledger_can_hold_are_refused(rid):
    with pytest.raises(InvalidRequest, match="request_id must be printable"):
        check("buy", "salt", 1, rid, products=PRODUCTS, max_qty=100)


@pytest.mark.parametrize("origin", ["\ud800", "trader 1\n24.11.2026 forged line", 7, "x" * 200])
def test_bad_origins_are_refused(origin):
    with pytest.raises(InvalidRequest, match="origin"):
        check("buy", "salt", 1, "r1", products=PRODUCTS, max_qty=100, origin=origin)


@pytest.mark.parametrize("epoch", [-1, 2**31, 10**30, 1.0, True, "1"])
def test_epochs_beyond_what_the_ledger_stores_are_refused(epoch):
    with pytest.raises(InvalidRequest, match="epoch"):
        check("buy", "salt", 1, "r1", products=PRODUCTS, max_qty=100, epoch=epoch)


def test_a_huge_refused_value_is_not_echoed_whole():
    with pytest.raises(UnknownProduct) as product:
        check("buy", "x" * 100_000, 1, "r1", products=PRODUCTS, max_qty=100)
    with pytest.raises(InvalidRequest) as qty:
        check("buy", "salt", 10**5000, "r1", products=PRODUCTS, max_qty=100)
    assert len(str(product.value)) < 200 and "(100002 characters)" in str(product.value)
    assert len(str(qty.value)) < 200 and "int of about 5001 digits" in str(qty.value)


def test_shown_keeps_any_value_short_and_never_raises():
    """Error messages repeat refused values: nested containers show a few items a few
    levels deep (YAML aliases can share one list nine levels down), and an int too long
    for repr (over 4,300 digits) is counted, wherever it sits."""
    from pyromarket.orders import shown
    shared = ["lol"] * 9
    for _ in range(8):
        shared = [shared] * 9                       # 9**9 items if spelled out
    assert len(shown(shared)) < 120 and shown(shared).startswith("[[[[...]")
    assert shown([10**5000]) == "[an int of about 5001 digits]"
    assert shown(-10**5000) == "a negative int of about 5001 digits"
    assert shown({"k": (1, 2.5, None, True)}) == "{'k': (1, 2.5, None, True)}"
    assert shown("x" * 100).endswith("… (102 characters)")


def test_good_order_passes():
    order = check("sell", "fish", 100, "r9", products=PRODUCTS, max_qty=100, origin="trader 2")
    assert order.to_row() == ("sell", "fish", 100, "r9", "trader 2", 0)


@pytest.mark.parametrize("serializer", [JsonSerializer, SerpentSerializer])
@pytest.mark.parametrize("cls", errors.REMOTE_ERRORS)
def test_every_market_error_survives_the_wire(cls, serializer):
    """json: what the market's processes speak; serpent: what a REPL user's default is."""
    rpc.configure()
    ser = serializer()
    back = ser.loads(ser.dumps(cls("the message")))
    assert type(back) is cls and str(back) == "the message"


@pytest.fixture
def bare_client():
    """This process as a client that never imported pyromarket: Pyro5 without the
    market's hooks for rebuilding errors (restored afterwards)."""
    rpc.configure()
    names = [f"builtins.{twin.__name__}" for twin in errors.BUILTIN_TWINS]
    for name in names:
        SerializerBase.unregister_dict_to_class(name)
    yield
    rpc.register_errors()


@pytest.mark.parametrize("serializer", [JsonSerializer, SerpentSerializer])
@pytest.mark.parametrize("cls", errors.REMOTE_ERRORS)
def test_a_client_that_never_imported_the_market_reads_its_errors(cls, serializer, bare_client):
    """Pyro5 rebuilds only the exceptions it knows; before, such a client got
    `SerializeError: unsupported serialized class` and never saw the message."""
    ser = serializer()
    back = ser.loads(ser.dumps(cls("the message")))
    assert type(back) is errors.builtin_twin(cls)
    assert str(back) == f"{cls.__name__}: the message"
    assert (back.market_error, back.message) == (cls.__name__, "the message")


def test_bad_arguments_reach_a_bare_client_as_value_errors_and_the_rest_as_runtime_errors():
    assert errors.builtin_twin(UnknownProduct) is ValueError
    assert errors.builtin_twin(ConflictingRequest) is ValueError
    assert errors.builtin_twin(Unavailable) is RuntimeError
    assert errors.builtin_twin(MarketError) is RuntimeError


@pytest.mark.parametrize("serializer", [JsonSerializer, SerpentSerializer])
def test_the_twins_own_errors_still_arrive_as_themselves(serializer):
    rpc.configure()
    ser = serializer()
    for exc in (ValueError("plain"), RuntimeError("also plain")):
        back = ser.loads(ser.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)


def test_a_market_error_subclass_the_wire_does_not_know_arrives_as_market_error():
    class Local(InvalidRequest):
        pass
    rpc.configure()
    ser = JsonSerializer()
    back = ser.loads(ser.dumps(Local("odd")))
    assert type(back) is MarketError and str(back) == "odd"


def test_the_market_speaks_json():
    rpc.configure()
    import Pyro5
    assert Pyro5.config.SERIALIZER == rpc.SERIALIZER == "json"


@pytest.mark.parametrize("exc", [UnknownProduct("x"), ConflictingRequest("y"), Unavailable("z")])
def test_errors_as_data_round_trip(exc):
    back = errors.from_wire(errors.to_wire(exc))
    assert type(back) is type(exc) and str(back) == str(exc)


def test_foreign_error_as_data_degrades_to_market_error():
    back = errors.from_wire(errors.to_wire(KeyError("k")))
    assert type(back) is MarketError


class _Thing:
    @rpc.remote
    def method(self, a, b=1):
        if a == "boom":
            raise KeyError("internal")
        if a == "market":
            raise UnknownProduct("own error")
        return a


def test_remote_guard_turns_bad_arity_into_invalid_request():
    with pytest.raises(InvalidRequest, match="method"):
        _Thing().method()
    with pytest.raises(InvalidRequest):
        _Thing().method(1, 2, 3)


def test_remote_guard_hides_foreign_exceptions():
    with pytest.raises(MarketError, match="internal error in method: KeyError") as info:
        _Thing().method("boom")
    assert type(info.value) is MarketError


def test_remote_guard_passes_market_errors_and_results():
    with pytest.raises(UnknownProduct):
        _Thing().method("market")
    assert _Thing().method("ok") == "ok"


def test_stamp_matches_the_spec_format():
    import re
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d\.\d\d", stamp(1_700_000_000.37))


def test_event_log_writes_timestamped_lines(tmp_path):
    log = EventLog(str(tmp_path / "sub" / "trader-1.txt"))
    log("Trader 1 informed buyer 2 that no salt was available")
    log.close()
    log.close()
    line = (tmp_path / "sub" / "trader-1.txt").read_text().splitlines()[0]
    assert line.endswith(" Trader 1 informed buyer 2 that no salt was available")


def test_event_log_lines_reach_the_file_without_a_close_in_their_order(tmp_path):
    from pyromarket.process import wait_until
    log = EventLog(str(tmp_path / "t.txt"), flush_s=0.01)
    try:
        for i in range(50):
            log(f"event {i}")
        wait_until(lambda: (tmp_path / "t.txt").read_text().count("\n") == 50, 5,
                   "the log's thread to write every line")
        lines = (tmp_path / "t.txt").read_text().splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == [f"event {i}" for i in range(50)]
    finally:
        log.close()


def test_event_log_close_writes_what_is_queued_and_later_events_are_dropped(tmp_path):
    log = EventLog(str(tmp_path / "t.txt"), flush_s=60)     # the thread would not write in time
    log("first")
    log.many(["second", "third"])
    log.close()
    log("after close")
    assert [line.split(" ", 2)[2] for line in (tmp_path / "t.txt").read_text().splitlines()] \
        == ["first", "second", "third"]


def test_event_log_without_a_path_drops_events(tmp_path):
    log = EventLog(None)
    log("nowhere")
    assert not log._queue                                  # not kept until close() either
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_event_log_many_shares_one_stamp(tmp_path):
    log = EventLog(str(tmp_path / "w.txt"))
    log.many(["Warehouse shipped 1 salt to trader 1", "Warehouse stocked 2 fish from trader 2"])
    log.many([])
    log.close()
    lines = (tmp_path / "w.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[0][:22] == lines[1][:22]
    assert lines[1].endswith("Warehouse stocked 2 fish from trader 2")


def test_event_log_survives_text_no_utf8_file_can_hold(tmp_path):
    from pyromarket.process import wait_until
    log = EventLog(str(tmp_path / "t.txt"), flush_s=0.01)
    try:
        log("Trader 1 informed \ud800 that 1 salt was shipped")
        log("the next event")
        wait_until(lambda: "the next event" in (tmp_path / "t.txt").read_text(), 5,
                   "the log's thread to write past the bad line")
        assert "informed \\ud800 that" in (tmp_path / "t.txt").read_text()
    finally:
        log.close()


class _FullDisk:
    """A log file on a disk that fills up and later has room again."""

    def __init__(self):
        self.full = True
        self.text = ""
        self.opened = 0

    def open(self, *_):
        self.opened += 1
        disk = self

        class File:
            buffered = ""

            def write(self, text):
                self.buffered += text

            def flush(self):
                if disk.full:
                    raise OSError(28, "No space left on device")
                disk.text += self.buffered
                self.buffered = ""

            def close(self):
                self.flush()
        return File()


def test_an_event_log_on_a_full_disk_loses_events_not_its_writer_and_says_so(monkeypatch, tmp_path):
    """A failed write killed the writer thread (events then queued without end) and made
    close() raise, in the middle of a role's shutdown."""
    from pyromarket import eventlog
    from pyromarket.process import wait_until
    disk = _FullDisk()
    monkeypatch.setattr(eventlog.EventLog, "_open", disk.open)
    log = EventLog(str(tmp_path / "t.txt"), flush_s=0.01)
    try:
        for i in range(3):
            log(f"lost {i}")
        log.many(["lost 3", "lost 4"])
        wait_until(lambda: log.lost == 5, 5, "the writer to count the refused events")
        assert log._writer.is_alive() and disk.text == ""
        disk.full = False
        log("written")
        wait_until(lambda: "written" in disk.text, 5, "the writer to write once there is room")
        blank, note, event = disk.text.split("\n")[:3]
        assert blank == ""                         # ends a line the failed write cut short
        note, event = note.split(" ", 2)[2], event.split(" ", 2)[2]
        assert note == "(5 events of this log were not written: No space left on device)"
        assert event == "written" and disk.opened >= 2          # opened again after the failure
        disk.full = True
        log("refused at close")
    finally:
        log.close()                                              # never raises
    assert log.lost == 6


def test_an_event_log_that_cannot_write_holds_at_most_max_queued_events(monkeypatch, tmp_path):
    from pyromarket import eventlog
    monkeypatch.setattr(eventlog, "MAX_QUEUED", 10)
    log = EventLog(str(tmp_path / "t.txt"), flush_s=60)     # the thread would not write in time
    for i in range(12):
        log(f"event {i}")
    log.many(["a", "b", "c"])
    assert len(log._queue) == 10 and log.lost == 5
    log.close()
    lines = [line.split(" ", 2)[2] for line in (tmp_path / "t.txt").read_text().splitlines()[1:]]
    assert lines[0] == ("(5 events of this log were not written: more than 10 events waited "
                        "for the file)")
    assert lines[1:] == [f"event {i}" for i in range(10)]


def test_each_remote_object_exposes_exactly_its_remote_methods():
    from Pyro5.server import _get_exposed_members

    from pyromarket.peer import PeerNode
    from pyromarket.trader import Trader
    from pyromarket.warehouse import Warehouse
    surface = {cls.__name__: _get_exposed_members(cls, only_exposed=True)
               for cls in (Trader, Warehouse, PeerNode)}
    assert {n: sorted(m["methods"]) for n, m in surface.items()} == {
        "Trader": ["buy", "denials", "lookup", "ping", "sell", "stats"],
        "Warehouse": ["apply", "audit", "buy", "fence", "fenced", "inventory", "join", "ledger",
                      "lookup", "ping", "revalidate", "sell", "stats"],
        "PeerNode": ["election_message", "ping", "status", "trader_down", "trader_up"]}
    assert all(not m["attrs"] and not m["oneway"] for m in surface.values())


# --- message sizes: every page and batch the market sends fits rpc.MAX_MESSAGE_BYTES ---

WIDE = "\U0001d54f"          # a printable character that takes 4 bytes in UTF-8


def _worst_ledger_row() -> dict:
    from pyromarket.orders import MAX_EPOCH, MAX_ID_LEN, MAX_PRODUCT_LEN, MAX_QUANTITY, MAX_STOCK
    from pyromarket.store import LEDGER_COLUMNS
    row = {"seq": 2**63 - 1, "request_id": WIDE * MAX_ID_LEN, "kind": "sell",
           "product": WIDE * MAX_PRODUCT_LEN, "qty": MAX_QUANTITY, "outcome": "unavailable",
           "stock_after": MAX_STOCK, "version": 2**63 - 1, "ts": 1795558817.588691,
           "origin": WIDE * MAX_ID_LEN, "epoch": MAX_EPOCH}
    assert tuple(row) == LEDGER_COLUMNS
    return row


def _worst_messages() -> dict:
    from pyromarket.orders import (MAX_BATCH_ORDERS, MAX_EPOCH, MAX_ID_LEN, MAX_PRODUCT_LEN,
                                   MAX_PRODUCTS, MAX_QUANTITY)
    from pyromarket.trader import DENIALS_PAGE_MAX
    from pyromarket.warehouse import LEDGER_PAGE_MAX
    product = WIDE * MAX_PRODUCT_LEN
    order = ("sell", product, MAX_QUANTITY, WIDE * MAX_ID_LEN, WIDE * MAX_ID_LEN, MAX_EPOCH)
    return {"ledger page": [_worst_ledger_row()] * LEDGER_PAGE_MAX,
            "denials page": [[1795558817.588691, product, MAX_QUANTITY]] * DENIALS_PAGE_MAX,
            "apply batch": [list(order)] * MAX_BATCH_ORDERS,
            "apply reply": [["error", "InvalidRequest", "x" * 300]] * MAX_BATCH_ORDERS,
            "inventory": {f"{WIDE * (MAX_PRODUCT_LEN - 4)}{i:04}":
                          {"stock": 2**62, "version": 2**63 - 1} for i in range(MAX_PRODUCTS)}}


@pytest.mark.parametrize("serializer", [JsonSerializer(), SerpentSerializer()],
                         ids=["json", "serpent"])
def test_the_largest_pages_and_batches_fit_one_message(serializer):
    """With room to spare (a header and annotations take well under a KB), in the market's
    own json and in the serpent a REPL user speaks."""
    sizes = {what: len(serializer.dumps(msg)) for what, msg in _worst_messages().items()}
    assert max(sizes.values()) < 0.9 * rpc.MAX_MESSAGE_BYTES, sizes


def test_configure_sets_the_message_limit_of_every_market_process(monkeypatch):
    import Pyro5
    monkeypatch.setattr(Pyro5.config, "MAX_MESSAGE_SIZE", 2**30)
    rpc.configure()
    assert Pyro5.config.MAX_MESSAGE_SIZE == rpc.MAX_MESSAGE_BYTES == 2**20


def test_a_serving_process_decodes_json_and_short_serpent_only(monkeypatch):
    """Pyro5 picks a message's decoder by the id its sender put in it. Marshal trusts the
    lengths it reads (6 bytes claiming a 2**31-item tuple cost 77 s and 16 GB), and
    serpent's parser takes up to 2.5 ms a KB, so a server decodes json, serpent up to
    SERPENT_MAX_BYTES, and nothing else."""
    import Pyro5.errors
    import Pyro5.serializers as pyro_serializers
    monkeypatch.setattr(pyro_serializers, "serializers", dict(pyro_serializers.serializers))
    monkeypatch.setattr(pyro_serializers, "serializers_by_id",
                        dict(pyro_serializers.serializers_by_id))
    rpc.guard_serializers()
    rpc.guard_serializers()                                 # twice is the same as once
    by_name = pyro_serializers.serializers
    assert type(by_name["json"]) is JsonSerializer
    by_id = {ser.serializer_id: ser for ser in by_name.values()}
    assert by_id == pyro_serializers.serializers_by_id
    marshal = by_name["marshal"]
    with pytest.raises(Pyro5.errors.SerializeError, match="does not accept the marshal serializer"):
        marshal.loadsCall(marshal.dumpsCall("market.trader", "lookup", ("salt",), {}))
    with pytest.raises(Pyro5.errors.SerializeError, match="does not accept the marshal"):
        marshal.loads(b"(\xff\xff\xff\x7fN")                # never decoded
    assert marshal.dumps({"outcome": "x"})                   # its refusals still go out
    serpent = by_name["serpent"]
    call = serpent.dumpsCall("market.trader", "lookup", ("x" * (rpc.SERPENT_MAX_BYTES - 200),), {})
    assert serpent.loadsCall(call)[1] == "lookup"
    big = serpent.dumpsCall("market.trader", "lookup", ("x" * rpc.SERPENT_MAX_BYTES,), {})
    with pytest.raises(Pyro5.errors.SerializeError, match="at most 65536 bytes"):
        serpent.loadsCall(big)
    with pytest.raises(Pyro5.errors.SerializeError, match="at most 65536 bytes"):
        serpent.loads(big)


def _received(message_data: bytes):
    """Parse a message's bytes as a market process receives them (recv_stub's steps)."""
    import Pyro5.protocol
    size = Pyro5.protocol._header_size
    msg = Pyro5.protocol.ReceivingMessage(message_data[:size])
    msg.add_payload(message_data[size:])
    return msg


def test_a_compressed_message_may_not_inflate_past_the_size_limit(monkeypatch):
    """zlib inflates about 1000 to 1, and Pyro5 inflates with no bound: a message within
    the limit could become a gigabyte to decode."""
    import Pyro5
    import Pyro5.errors
    import Pyro5.protocol
    rpc.configure()
    monkeypatch.setattr(Pyro5.config, "COMPRESSION", True)
    fine = b"[" + b"1," * 50_000 + b"1]"
    bomb = b" " * (rpc.MAX_MESSAGE_BYTES + 1)
    for data in (fine, bomb):
        sent = Pyro5.protocol.SendingMessage(Pyro5.protocol.MSG_INVOKE, 0, 1, 3, data)
        assert sent.flags & Pyro5.protocol.FLAGS_COMPRESSED and len(sent.data) < 10_000
    msg = _received(Pyro5.protocol.SendingMessage(Pyro5.protocol.MSG_INVOKE, 0, 1, 3, fine).data)
    assert bytes(msg.data) == fine and msg.data_size == len(fine)
    with pytest.raises(Pyro5.errors.ProtocolError, match="must inflate to at most 1048576 bytes"):
        _received(Pyro5.protocol.SendingMessage(Pyro5.protocol.MSG_INVOKE, 0, 1, 3, bomb).data)


class _Socket:
    """What a handshake deadline uses of a socket: shutdown, which wakes a blocked read."""

    def __init__(self):
        self.shut = threading.Event()

    def shutdown(self, how):
        self.shut.set()


def test_a_handshake_deadline_cancelled_in_time_leaves_the_socket_alone():
    sock = _Socket()
    deadline = rpc._Deadline(sock, 60.0)
    assert deadline.cancel() is True
    assert deadline.cancel() is True                      # twice is the same as once
    assert not sock.shut.is_set()


def test_a_handshake_deadline_that_passes_shuts_the_socket_down():
    sock = _Socket()
    deadline = rpc._Deadline(sock, 0.01)
    assert sock.shut.wait(10)
    assert deadline.cancel() is False


def test_a_handshake_in_time_passes_and_one_past_its_deadline_fails(monkeypatch):
    """Pyro5's own handshake (stubbed) reads until the socket is shut down; the bound
    turns a handshake that ends after its deadline into a refusal, and a refusal that
    Pyro5 reads from its accept loop gets the shorter deadline."""
    sock = _Socket()
    conn = types.SimpleNamespace(sock=sock)
    monkeypatch.setattr(rpc, "_pyro_handshake", lambda daemon, c, reason=None: True)
    monkeypatch.setattr(rpc, "HANDSHAKE_TIMEOUT_S", 60.0)
    assert rpc._bounded_handshake(None, conn) is True
    monkeypatch.setattr(rpc, "_pyro_handshake",
                        lambda daemon, c, reason=None: c.sock.shut.wait(10))
    monkeypatch.setattr(rpc, "HANDSHAKE_TIMEOUT_S", 0.01)
    assert rpc._bounded_handshake(None, conn) is False and sock.shut.is_set()
    sock.shut.clear()
    monkeypatch.setattr(rpc, "HANDSHAKE_TIMEOUT_S", 60.0)
    monkeypatch.setattr(rpc, "DENIAL_TIMEOUT_S", 0.01)
    assert rpc._bounded_handshake(None, conn, "no free workers") is False
    assert sock.shut.is_set()


def test_bound_handshakes_covers_pyro5s_name_server_daemon_too(monkeypatch):
    import Pyro5.nameserver
    import Pyro5.server
    monkeypatch.setattr(Pyro5.server.Daemon, "_handshake", Pyro5.server.Daemon._handshake)
    rpc.bound_handshakes()
    assert Pyro5.server.Daemon._handshake is rpc._bounded_handshake
    assert Pyro5.nameserver.NameServerDaemon._handshake is rpc._bounded_handshake
