#!/usr/bin/env bash
# Training across two hosts over TCP: two network namespaces joined by a veth pair (private addresses, nothing
# leaves the machine), each with its own hostname, and mpirun starting one process in each through an
# `ip netns exec` launch agent instead of ssh. The run must end exactly where the same 2-process run on one host
# ends. Needs root (ip netns); without it, or where namespaces cannot be made, it says so and skips.
set -uo pipefail
cd "$(dirname "$0")/.."
unet=$(realpath "${UNET:-.build/release/unet}")
[ "$(id -u)" -eq 0 ] || { echo "netns-test: skipped (network namespaces need root)"; exit 0; }
tmp=$(mktemp -d)
a=sunet-a-$$ b=sunet-b-$$
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "netns-test FAILED: $*" >&2; exit 1; }
if ! ip netns add "$a" 2>/dev/null; then echo "netns-test: skipped (cannot create network namespaces here)"; exit 0; fi
ip netns add "$b" || fail "second namespace"
ip link add "va$$" netns "$a" type veth peer name "vb$$" netns "$b" || fail "veth pair"
ip -n "$a" addr add 10.77.0.1/24 dev "va$$" && ip -n "$b" addr add 10.77.0.2/24 dev "vb$$" || fail "addresses"
for n in "$a" "$b"; do ip -n "$n" link set lo up; done
ip -n "$a" link set "va$$" up && ip -n "$b" link set "vb$$" up || fail "links up"

# mpirun runs this instead of ssh: AGENT HOST COMMAND...; the command runs in that host's namespace.
cat >"$tmp/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in
  10.77.0.1) ns=$a; name=host-a ;;
  10.77.0.2) ns=$b; name=host-b ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$name; \$*"
AGENT
chmod +x "$tmp/agent"

"$unet" synth --cases 6 --procedural --seed 3 -o "$tmp/data" >/dev/null 2>&1 || fail "synth"
"$unet" preprocess --data "$tmp/data" -o "$tmp/pre" --dim 2 >/dev/null 2>&1 || fail "preprocess"
# One thread each in both runs (on two hosts a process would otherwise take both cores, and another thread
# count changes the kernels' summation order).
args="--data $tmp/pre --batch 4 --filters 8,16,16,16,16 --lr 3e-3 --seed 5 --val-every 5 --epochs 10 --sync-batchnorm --threads 1"
timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2 "$unet" train $args -o "$tmp/onehost" >/dev/null 2>&1 \
  || fail "2 processes on one host"
out=$(timeout 300 ip netns exec "$a" unshare --uts sh -c "hostname host-a; mpirun --allow-run-as-root -np 2 \
  --host 10.77.0.1:1,10.77.0.2:1 --mca plm_rsh_agent $tmp/agent --mca btl tcp,self \
  --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
  sh -c 'echo \"rank \$OMPI_COMM_WORLD_RANK on \$(hostname)\" >&2; exec $unet train $args -o $tmp/twohosts'" 2>&1) \
  || fail "2 processes on two hosts: $out"
echo "$out" | grep -q "rank 1 on host-b" && echo "$out" | grep -q "rank 0 on host-a" || fail "the processes did not run on both hosts: $out"
cmp -s "$tmp/onehost/checkpoint_last.safetensors" "$tmp/twohosts/checkpoint_last.safetensors" \
  || fail "the run across two hosts ended elsewhere than on one host"
echo "netns-test OK: ranks on host-a and host-b over TCP (10.77.0.1 <-> 10.77.0.2) ended as on one host"
