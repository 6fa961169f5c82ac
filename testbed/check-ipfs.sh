#!/usr/bin/env bash
# check-ipfs.sh — smoke check of the running js-ipfs pair and SecantusDB (run testbed/up.sh first).
#
# Usage: testbed/check-ipfs.sh [ipfs] [mongo]     (default: both)
# Env:   the same as up.sh (VIGIL_TESTBED_DIR, VIGIL_IPFS_A_API_PORT, VIGIL_IPFS_B_API_PORT, ..., VIGIL_MONGO_PORT)
#
# ipfs:  id + version on both nodes; swarm/peers on each lists the other; a 3 MB random file added on A
#        (add?cid-version=1&raw-leaves=true&cid-base=base32) is read back from B with cat and has the same
#        sha256; pin/add + pin/ls?type=recursive on A; pin/ls on B (not pinned) and cat of an unknown / an
#        invalid CID give the documented errors; pubsub: pub to a topic nobody subscribes to (js-ipfs: HTTP
#        500 InsufficientPeers), then B subscribes (pubsub/sub, streamed with curl -N), A publishes, and B's
#        stream carries the message (data = multibase "u" + base64url). Raw answers are printed as "raw:".
# mongo: hello, then insert_one / find_one / count / delete with pymongo (from SecantusDB's venv).
# Artifacts go to $VIGIL_TESTBED_DIR/check-ipfs/ (overwritten by the next run). Exits non-zero on the
# first failure; only the curl subscriber it starts itself is stopped (by its PID).
set -euo pipefail
TB_NAME=check-ipfs
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fail() { printf '[check-ipfs] FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '[check-ipfs] ok: %s\n' "$*"; }
raw() { printf '[check-ipfs] raw: %s\n' "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

OUT=$STATE_DIR/check-ipfs
SUB_PID=""
cleanup() {
    if [[ -n $SUB_PID ]] && kill -0 "$SUB_PID" 2>/dev/null; then kill "$SUB_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

read -r A_API _ A_SWARM <<<"$(ipfs_ports_of ipfs-a)"
read -r B_API _ _ <<<"$(ipfs_ports_of ipfs-b)"
A=http://127.0.0.1:$A_API/api/v0
B=http://127.0.0.1:$B_API/api/v0

# post URL [curl args]: POST, write the body to $OUT/last.body, print the HTTP status.
post() {
    local url=$1
    shift
    curl -sS --max-time "${POST_TIMEOUT:-30}" -o "$OUT/last.body" -w '%{http_code}' -X POST "$@" "$url" || echo 000
}
body() { cat "$OUT/last.body"; }

# jq-like helper on node: js EXPR evaluated with `j` = the parsed JSON on stdin.
js() {
    node -e '
let s = ""
process.stdin.on("data", d => { s += d }).on("end", () => {
  const j = JSON.parse(s)
  const v = eval(process.argv[1])
  console.log(typeof v === "object" ? JSON.stringify(v) : String(v))
})' "$1"
}

b64url() { printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }
unb64url() {
    local s=${1//-/+}
    s=${s//_//}
    while ((${#s} % 4)); do s+="="; done
    printf '%s' "$s" | base64 -d
}

check_ipfs() {
    local pa pb ida idb st cid size t0 ms sha_in sha_out unknown topic t msg line got data i lines
    command -v curl >/dev/null || fail "curl missing: run testbed/install.sh ipfs"
    command -v node >/dev/null || fail "node missing: run testbed/install.sh ipfs"
    pa=$(service_pid ipfs-a) || fail "ipfs-a is not running (no live PID in $(pidfile_of ipfs-a)): run testbed/up.sh"
    pb=$(service_pid ipfs-b) || fail "ipfs-b is not running (no live PID in $(pidfile_of ipfs-b)): run testbed/up.sh"
    ok "ipfs-a pid $pa (RSS $(awk '/VmRSS/ {print $2 / 1024 " MB"}' "/proc/$pa/status")), ipfs-b pid $pb (RSS $(awk '/VmRSS/ {print $2 / 1024 " MB"}' "/proc/$pb/status"))"

    # id, version
    st=$(post "$A/id")
    [[ $st == 200 ]] || fail "POST $A/id: HTTP $st $(body)"
    raw "POST /api/v0/id (A) -> $st $(body)"
    ida=$(body | js j.ID)
    st=$(post "$B/id")
    [[ $st == 200 ]] || fail "POST $B/id: HTTP $st $(body)"
    idb=$(body | js j.ID)
    st=$(post "$A/version")
    [[ $st == 200 ]] || fail "POST $A/version: HTTP $st $(body)"
    raw "POST /api/v0/version -> $st $(body)"
    ok "ids: A $ida, B $idb; version $(body | js j.Version)"

    # swarm/peers on both
    st=$(post "$B/swarm/peers")
    raw "POST /api/v0/swarm/peers (B) -> $st $(body)"
    [[ $st == 200 ]] && body | js "j.Peers.map(p => p.Peer).join(' ')" | grep -w "$ida" >/dev/null ||
        fail "B's swarm/peers does not list A ($ida): run testbed/up.sh (it connects them)"
    st=$(post "$A/swarm/peers")
    raw "POST /api/v0/swarm/peers (A) -> $st $(body)"
    [[ $st == 200 ]] && body | js "j.Peers.map(p => p.Peer).join(' ')" | grep -w "$idb" >/dev/null ||
        fail "A's swarm/peers does not list B ($idb)"
    st=$(post "$B/swarm/connect?arg=/ip4/127.0.0.1/tcp/$A_SWARM/p2p/$ida")
    raw "POST /api/v0/swarm/connect?arg=/ip4/127.0.0.1/tcp/$A_SWARM/p2p/$ida (B, already connected) -> $st $(body)"
    [[ $st == 200 ]] || fail "swarm/connect B -> A: HTTP $st"
    ok "A and B list each other in swarm/peers"

    # add 3 MB on A, cat on B
    head -c 3000000 /dev/urandom >"$OUT/random3m.bin"
    sha_in=$(sha256sum "$OUT/random3m.bin" | cut -d' ' -f1)
    t0=$(now_ms)
    st=$(POST_TIMEOUT=60 post "$A/add?cid-version=1&raw-leaves=true&cid-base=base32" -F "file=@$OUT/random3m.bin")
    ms=$(($(now_ms) - t0))
    raw "POST /api/v0/add?cid-version=1&raw-leaves=true&cid-base=base32 (3 MB) -> $st $(body)"
    [[ $st == 200 ]] || fail "add on A: HTTP $st $(body)"
    cid=$(body | tail -n1 | js j.Hash)
    size=$(body | tail -n1 | js 'typeof j.Size + ":" + j.Size')
    [[ $cid == bafy* ]] || fail "add returned Hash '$cid', expected a base32 CIDv1 (bafy...)"
    ok "added 3000000 bytes on A in $ms ms: $cid (Size $size)"
    t0=$(now_ms)
    curl -sS --max-time 60 -X POST -o "$OUT/random3m.cat" "$B/cat?arg=$cid" || fail "cat $cid on B failed"
    ms=$(($(now_ms) - t0))
    sha_out=$(sha256sum "$OUT/random3m.cat" | cut -d' ' -f1)
    [[ $sha_in == "$sha_out" ]] || fail "cat on B: sha256 $sha_out differs from the added file's $sha_in"
    ok "cat on B (bitswap from A) in $ms ms: same sha256 $sha_in"

    # pin/add + pin/ls on A; pin/ls on B (not pinned)
    st=$(post "$A/pin/add?arg=$cid&cid-base=base32")
    raw "POST /api/v0/pin/add?arg=$cid&cid-base=base32 -> $st $(body)"
    [[ $st == 200 && $(body | js 'j.Pins.join(" ")') == *"$cid"* ]] || fail "pin/add on A: HTTP $st $(body)"
    st=$(post "$A/pin/add?arg=$cid")
    raw "POST /api/v0/pin/add?arg=$cid (no cid-base) -> $st $(body)"
    st=$(post "$A/pin/ls?arg=$cid&type=recursive&cid-base=base32")
    raw "POST /api/v0/pin/ls?arg=$cid&type=recursive&cid-base=base32 -> $st $(body)"
    [[ $st == 200 && $(body | js "j.Keys['$cid'] && j.Keys['$cid'].Type") == recursive ]] ||
        fail "pin/ls on A does not show $cid as recursive: HTTP $st $(body)"
    st=$(post "$A/pin/ls?arg=$cid&type=recursive")
    raw "POST /api/v0/pin/ls?arg=$cid&type=recursive (no cid-base) -> $st $(body)"
    ok "pin/add + pin/ls?type=recursive on A: $cid is pinned recursively"
    st=$(post "$B/pin/ls?arg=$cid&type=recursive")
    raw "POST /api/v0/pin/ls?arg=$cid&type=recursive (B, not pinned) -> $st $(body)"
    [[ $st != 200 && $(body) == *"is not pinned"* ]] || fail "pin/ls on B for an unpinned CID: HTTP $st $(body)"
    ok "pin/ls on B for the unpinned CID: HTTP $st, 'is not pinned'"

    # cat errors: unknown CID (valid, in no blockstore: only-hash) with timeout=2s; invalid CID
    head -c 64 /dev/urandom >"$OUT/unknown.bin"
    st=$(post "$A/add?only-hash=true&cid-version=1&raw-leaves=true&cid-base=base32" -F "file=@$OUT/unknown.bin")
    unknown=$(body | tail -n1 | js j.Hash)
    st=$(post "$B/cat?arg=$unknown&timeout=2s")
    raw "POST /api/v0/cat?arg=$unknown&timeout=2s (unknown CID) -> $st $(body)"
    [[ $st == 500 ]] || fail "cat of an unknown CID with timeout=2s: HTTP $st, expected 500"
    st=$(post "$B/cat?arg=not-a-cid")
    raw "POST /api/v0/cat?arg=not-a-cid -> $st $(body)"
    [[ $st == 400 ]] || fail "cat of an invalid CID: HTTP $st, expected 400"
    ok "cat errors: unknown CID -> 500 (after the timeout), invalid CID -> 400"

    # pubsub
    topic=vigil-check-$(date +%s%N)
    t=u$(b64url "$topic")
    printf 'nobody listens' >"$OUT/msg0"
    st=$(post "$A/pubsub/pub?arg=$t" -F "file=@$OUT/msg0")
    raw "POST /api/v0/pubsub/pub?arg=$t (no subscriber anywhere) -> $st $(body)"
    ok "pubsub/pub with no subscriber: HTTP $st"
    : >"$OUT/sub.out"
    curl -sS -N --max-time 60 -X POST "$B/pubsub/sub?arg=$t" >"$OUT/sub.out" 2>"$OUT/sub.err" &
    SUB_PID=$!
    sleep 3
    msg="vigil pubsub check $(date -Is) {\"cid\":\"$cid\"}"
    printf '%s' "$msg" >"$OUT/msg1"
    # A learns of B's subscription through gossipsub (1-3 s); retry while it answers InsufficientPeers.
    for ((i = 0; i < 10; i++)); do
        st=$(post "$A/pubsub/pub?arg=$t" -F "file=@$OUT/msg1")
        raw "POST /api/v0/pubsub/pub?arg=$t (B subscribed) -> $st '$(body)'"
        [[ $st == 200 ]] && break
        sleep 1
    done
    [[ $st == 200 ]] || fail "pubsub/pub on A: HTTP $st $(body)"
    got=""
    for ((i = 0; i < 100; i++)); do
        while IFS= read -r line; do
            [[ $line == *'"data"'* ]] || continue
            data=$(js j.data <<<"$line")
            [[ $data == u* ]] || fail "pubsub/sub data is not multibase 'u': $data"
            if [[ $(unb64url "${data#u}") == "$msg" ]]; then got=$line; fi
        done <"$OUT/sub.out"
        [[ -n $got ]] && break
        sleep 0.1
    done
    kill "$SUB_PID" 2>/dev/null || true
    wait "$SUB_PID" 2>/dev/null || true
    SUB_PID=""
    mapfile -t lines <"$OUT/sub.out"
    for line in "${lines[@]}"; do raw "pubsub/sub line: $line"; done
    [[ -n $got ]] || fail "B's pubsub/sub stream did not carry the message within 10 s (see $OUT/sub.out)"
    [[ ${lines[0]} == "{}" ]] || fail "the pubsub/sub stream's first line is '${lines[0]}', expected {}"
    ok "pubsub: B got A's message; fields $(js 'Object.keys(j).join(",")' <<<"$got"); from $(js j.from <<<"$got")"
    echo "[check-ipfs] PASS ipfs"
}

check_mongo() {
    local pid
    pid=$(service_pid mongo) || fail "mongo is not running (no live PID in $(pidfile_of mongo)): run testbed/up.sh"
    [[ -x $SECANTUS_VENV/bin/python ]] || fail "$SECANTUS_VENV missing: run testbed/install.sh mongo"
    ok "mongo pid $pid (RSS $(awk '/VmRSS/ {print $2 / 1024 " MB"}' "/proc/$pid/status"))"
    "$SECANTUS_VENV/bin/python" - "$VIGIL_MONGO_PORT" <<'PY' || fail "pymongo round trip failed"
import datetime, sys, time, uuid
import pymongo
port = int(sys.argv[1])
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=5000)
h = c.admin.command("hello")
print(f"[check-ipfs] raw: hello -> ok={h.get('ok')} isWritablePrimary={h.get('isWritablePrimary')} "
      f"setName={h.get('setName')} hosts={h.get('hosts')} maxWireVersion={h.get('maxWireVersion')}")
print(f"[check-ipfs] ok: server version {c.server_info().get('version')}, driver topology "
      f"{c.topology_description.topology_type_name}")
coll = c.vigil_check.smoke
marker = str(uuid.uuid4())
t0 = time.monotonic()
r = coll.insert_one({"marker": marker, "at": datetime.datetime.now(datetime.timezone.utc), "n": 42})
doc = coll.find_one({"marker": marker})
assert doc is not None and doc["n"] == 42 and doc["_id"] == r.inserted_id, doc
assert coll.count_documents({"marker": marker}) == 1
assert coll.delete_one({"_id": r.inserted_id}).deleted_count == 1
print(f"[check-ipfs] ok: insert_one/find_one/count/delete_one round trip in "
      f"{(time.monotonic() - t0) * 1000:.0f} ms: {doc}")
PY
    echo "[check-ipfs] PASS mongo"
}

main() {
    local parts=("$@") p
    ((${#parts[@]})) || parts=(ipfs mongo)
    rm -rf "$OUT"
    mkdir -p "$OUT"
    for p in "${parts[@]}"; do
        case $p in
            ipfs) check_ipfs ;;
            mongo) check_mongo ;;
            *) fail "unknown part '$p' (known: ipfs, mongo)" ;;
        esac
    done
    echo "[check-ipfs] PASS"
}

main "$@"
