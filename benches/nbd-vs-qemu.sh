#!/usr/bin/env bash
# lunsnap serve against qemu-nbd, in one run on one machine, over Unix sockets on a
# tmpfs, with fio's nbd engine (a libnbd client): 4 KiB random writes and reads at
# queue depth 1 and 32, and the first write into every extent of a LUN just copied
# (a business copy) against the same after `qemu-img snapshot -c` (qcow2). Prints a
# Markdown table for BENCHMARKS.md with the ratios.
#
#   bash benches/nbd-vs-qemu.sh            # 5 s per fio run
#   RUNTIME=20 bash benches/nbd-vs-qemu.sh
#
# Needs fio (with the nbd engine), qemu-img and qemu-nbd: bash .ci/install-tools.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNTIME=${RUNTIME:-5}
SIZE=1G
DIR=$(mktemp -d /dev/shm/lunsnap-bench.XXXXXX)
cleanup() {
    pkill -P $$ 2>/dev/null || true
    [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

for tool in fio qemu-img qemu-nbd; do
    command -v "$tool" >/dev/null || { echo "$tool not installed: run bash .ci/install-tools" >&2; exit 1; }
done
# LUNSNAP=path uses an already built binary.
if [[ -z "${LUNSNAP:-}" ]]; then
    cargo build --release -q -p lunsnap-cli
fi
L=${LUNSNAP:-$PWD/target/release/lunsnap}

wait_for() { for _ in $(seq 200); do [[ -S "$1" ]] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }

start_lunsnap() { # IMAGE
    "$L" serve "$1" 2>"$DIR/serve.log" & SERVER=$!
    wait_for "$1.nbd"
}
start_qemu() { # FORMAT IMAGE
    rm -f "$DIR/q.sock"
    qemu-nbd -t -k "$DIR/q.sock" -f "$1" -x 1 --cache=writeback --aio=threads "$2" & SERVER=$!
    wait_for "$DIR/q.sock"
}
stop() { kill "$SERVER"; wait "$SERVER" || true; SERVER=; }

# fio IOPS of one job: fio_iops URI RW DEPTH [extra fio options...]
fio_iops() {
    local uri=$1 rw=$2 depth=$3
    shift 3
    fio --name=b --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k --iodepth="$depth" \
        --size=$SIZE --output-format=json --output="$DIR/fio.json" "$@" >/dev/null 2>&1
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(round(j["write"]["iops"]+j["read"]["iops"]))' "$DIR/fio.json"
}
timed() { fio_iops "$@" --time_based --runtime="$RUNTIME" --randrepeat=0; }
# One 4 KiB write in each 64 KiB of the LUN, in order: a first write into every
# extent (16 KiB) and every qcow2 cluster (64 KiB).
# (io_size: one pass, 1 GiB / 64 KiB writes of 4 KiB.)
first_writes() { fio_iops "$1" write "$2" --zonemode=strided --zonesize=4k --zonerange=64k --io_size=64m; }
prefill() { fio --name=p --ioengine=nbd --uri="$1" --rw=write --bs=1M --iodepth=8 --size=$SIZE \
    --refill_buffers >/dev/null 2>&1; }

declare -A R
lunsnap_uri="nbd+unix:///1?socket=$DIR/l.img.nbd"
qemu_uri="nbd+unix:///1?socket=$DIR/q.sock"

echo "--- steady 4 KiB I/O" >&2
"$L" format "$DIR/l.img" --size 2G >/dev/null
"$L" lun create "$DIR/l.img" 1 --size $SIZE >/dev/null
start_lunsnap "$DIR/l.img"
for rw in randwrite randread; do for d in 1 32; do R[lunsnap,$rw,$d]=$(timed "$lunsnap_uri" $rw $d); done; done
stop
qemu-img create -q -f qcow2 -o cluster_size=64k "$DIR/q.qcow2" $SIZE
start_qemu qcow2 "$DIR/q.qcow2"
for rw in randwrite randread; do for d in 1 32; do R[qcow2,$rw,$d]=$(timed "$qemu_uri" $rw $d); done; done
stop
qemu-img create -q -f raw "$DIR/q.raw" $SIZE
start_qemu raw "$DIR/q.raw"
for rw in randwrite randread; do for d in 1 32; do R[raw,$rw,$d]=$(timed "$qemu_uri" $rw $d); done; done
stop

echo "--- first write into every extent after a copy / a snapshot" >&2
for d in 1 32; do
    rm -f "$DIR/l.img" "$DIR/l.img.nbd" "$DIR/l.img.ctl"
    "$L" format "$DIR/l.img" --size 3G >/dev/null
    "$L" lun create "$DIR/l.img" 1 --size $SIZE >/dev/null
    start_lunsnap "$DIR/l.img"; prefill "$lunsnap_uri"; stop
    "$L" copy create "$DIR/l.img" --parent 1 --copy 11 --attached >/dev/null
    start_lunsnap "$DIR/l.img"
    R[lunsnap,first,$d]=$(first_writes "$lunsnap_uri" $d)
    stop
    rm -f "$DIR/q.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=64k "$DIR/q.qcow2" $SIZE
    start_qemu qcow2 "$DIR/q.qcow2"; prefill "$qemu_uri"; stop
    qemu-img snapshot -c s1 "$DIR/q.qcow2"
    start_qemu qcow2 "$DIR/q.qcow2"
    R[qcow2,first,$d]=$(first_writes "$qemu_uri" $d)
    stop
done

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "| 4 KiB, fio nbd engine | lunsnap serve | qemu-nbd qcow2 | qemu-nbd raw | lunsnap / qcow2 | lunsnap / raw |"
echo "|---|---:|---:|---:|---:|---:|"
for rw in randwrite randread; do for d in 1 32; do
    l=${R[lunsnap,$rw,$d]} q=${R[qcow2,$rw,$d]} r=${R[raw,$rw,$d]}
    echo "| $rw, depth $d (IOPS) | $l | $q | $r | $(ratio "$l" "$q") | $(ratio "$l" "$r") |"
done; done
for d in 1 32; do
    l=${R[lunsnap,first,$d]} q=${R[qcow2,first,$d]}
    echo "| first write into each extent after a copy / snapshot, depth $d (IOPS) | $l | $q | — | $(ratio "$l" "$q") | — |"
done
echo
echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1 || true); $(fio --version), $(qemu-nbd --version | sed -n 1p); runtime ${RUNTIME}s per run; images on /dev/shm."
