#!/usr/bin/env bash
# Proves that `ruas-nni compare` runs its trials through NNI's remote (SSH) training service.
#
# Starts a throwaway sshd on 127.0.0.1 (Debian's openssh-server, installed with apt-get when missing)
# with its own host key and user key in a temporary folder, runs a 2-trial comparison (cooperative,
# darts; tiny settings) whose trials NNI starts over that SSH connection, checks through NNI's REST API
# that both trials succeeded with psnr and ssim, then stops everything and removes what it made.
# Ends with one line; exit status 0 (it works) or 1.
#
#   scripts/remote_selftest.sh            # PYTHON=... to choose the Python environment (default: .venv)
#
# NNI's remote service runs `python -m pip install nni --upgrade` on every machine when it starts; the
# machine's pythonPath here is a folder whose `python` skips that (this check runs offline and must not
# change the environment) and otherwise is the environment's own Python.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ruas-remote-selftest.XXXXXX")"
SSHD_PID=""
EXP_PORT=""
EXP_ID=""
REMOTE_HOME_EXP=""
LOG="$WORK/selftest.log"
# what this script's own processes put in TMPDIR (e.g. torch's torchinductor_<user> cache) goes with WORK
mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"

# On failure: the tails of what the trials and NNI wrote (to stderr; stdout keeps its one line)
show_logs() {
    local file
    for file in $(find "$WORK/experiments" "$REMOTE_HOME_EXP" -type f \( -name 'trial.stderr' -o -name 'trial.log' \
                  -o -name 'trial.stdout' -o -name 'nnimanager.log' -o -name 'trial_keeper*.log' -o -name '*.log' \) \
                  -size +0 2>/dev/null | sort -u); do
        echo "==== $file" >&2
        tail -n 25 "$file" >&2
    done
    [ -s "$WORK/sshd.log" ] && { echo "==== sshd.log" >&2; tail -n 10 "$WORK/sshd.log" >&2; }
    [ -s "$LOG" ] && { echo "==== selftest.log" >&2; tail -n 25 "$LOG" >&2; }
}

finish() {
    local status=$1 message=$2
    if [ "$status" -ne 0 ]; then show_logs; fi
    if [ -n "$EXP_PORT" ]; then
        HOME="$WORK/home" PATH="$(dirname "$PY"):$PATH" "$(dirname "$PY")/nnictl" stop --port "$EXP_PORT" >>"$LOG" 2>&1 || true
    fi
    if [ -n "$SSHD_PID" ]; then kill "$SSHD_PID" 2>/dev/null; wait "$SSHD_PID" 2>/dev/null; fi
    # the SSH user's side of the experiment (NNI writes it under that user's ~/nni-experiments)
    if [ -n "$REMOTE_HOME_EXP" ] && [ -d "$REMOTE_HOME_EXP" ]; then rm -rf "$REMOTE_HOME_EXP"; fi
    if [ "$status" -ne 0 ] && [ -n "${KEEP_LOG:-}" ]; then cp "$LOG" "$KEEP_LOG" 2>/dev/null; fi
    rm -rf "$WORK"
    echo "remote selftest: $message"
    exit "$status"
}
fail() { finish 1 "FAILED: $*"; }
trap 'fail "interrupted"' INT TERM

SSHD=/usr/sbin/sshd
if [ ! -x "$SSHD" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server) >>"$LOG" 2>&1 \
        || fail "openssh-server is missing and apt-get could not install it"
fi
command -v ssh-keygen >/dev/null || fail "ssh-keygen is missing"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SSH_PORT="$(free_port)"
EXP_PORT_CANDIDATE="$(free_port)"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key" >>"$LOG" 2>&1 || fail "cannot make the host key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/user_key" >>"$LOG" 2>&1 || fail "cannot make the user key"
cp "$WORK/user_key.pub" "$WORK/authorized_keys"
chmod 600 "$WORK/authorized_keys"
mkdir -p /run/sshd 2>/dev/null || true
cat >"$WORK/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PidFile $WORK/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
# Bash sources ~/.bashrc even when not interactive when it sees SSH_CLIENT and no SHLVL: NNI's trial
# keeper runs every trial with /bin/bash and SSH_CLIENT inherited, so a ~/.bashrc that puts its own
# Python first (pyenv, conda) would override the machine's pythonPath in the trial. A set SHLVL stops that.
SetEnv SHLVL=1
CONF
"$SSHD" -D -e -f "$WORK/sshd_config" >>"$WORK/sshd.log" 2>&1 &
SSHD_PID=$!
for _ in $(seq 50); do
    ssh -q -i "$WORK/user_key" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes "$(id -un)@127.0.0.1" true 2>/dev/null && break
    kill -0 "$SSHD_PID" 2>/dev/null || fail "sshd did not start: $(tail -n 1 "$WORK/sshd.log")"
    sleep 0.2
done
ssh -q -i "$WORK/user_key" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o BatchMode=yes "$(id -un)@127.0.0.1" true 2>/dev/null || fail "cannot log in to the throwaway sshd"

# the machine's pythonPath: this environment's Python, minus NNI's `pip install nni --upgrade`
mkdir -p "$WORK/python-bin"
cat >"$WORK/python-bin/python" <<WRAP
#!/bin/sh
if [ "\$1" = "-m" ] && [ "\$2" = "pip" ]; then echo "selftest: pip skipped"; exit 0; fi
export OMP_NUM_THREADS=1
exec "$PY" "\$@"
WRAP
chmod +x "$WORK/python-bin/python"
ln -s python "$WORK/python-bin/python3"

cat >"$WORK/machines.yaml" <<YAML
- host: 127.0.0.1
  port: $SSH_PORT
  user: $(id -un)
  sshKeyFile: $WORK/user_key
  pythonPath: $WORK/python-bin
YAML

"$PY" -c "from ruas_nni.training.demo_data import make_demo_data; make_demo_data('$WORK/data')" >>"$LOG" 2>&1 \
    || fail "cannot make the demo data"
mkdir -p "$WORK/home"
OUT="$(cd "$ROOT" && HOME="$WORK/home" PATH="$(dirname "$PY"):$PATH" "$PY" -m ruas_nni compare \
    --strategies cooperative,darts --data "$WORK/data/train" --eval-data "$WORK/data/eval" \
    --epochs 1 --steps 1 --crop 16 --train-steps 1 --concurrency 2 --machines "$WORK/machines.yaml" \
    --port "$EXP_PORT_CANDIDATE" --experiment-dir "$WORK/experiments" --detach 2>&1)"
echo "$OUT" >>"$LOG"
EXP_ID="$(echo "$OUT" | sed -n 's/^experiment id: //p')"
[ -n "$EXP_ID" ] || fail "compare did not start: $(echo "$OUT" | tail -n 1)"
EXP_PORT="$EXP_PORT_CANDIDATE"
REMOTE_HOME_EXP="$(getent passwd "$(id -un)" | cut -d: -f6)/nni-experiments/$EXP_ID"

RESULT="$("$PY" - "$EXP_PORT" <<'PYCHECK'
import json, sys, time, urllib.request
port = int(sys.argv[1])
api = f"http://127.0.0.1:{port}/api/v1/nni"
def get(path):
    with urllib.request.urlopen(api + path, timeout=10) as r:
        return json.loads(r.read())
deadline = time.monotonic() + 900
while True:
    jobs = get("/trial-jobs")
    done = [j for j in jobs if j["status"] in ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")]
    status = get("/check-status")["status"]
    if len(jobs) >= 2 and len(done) == len(jobs):
        break
    if status == "ERROR" or time.monotonic() > deadline:
        print(f"FAIL experiment {status}, trials {[j['status'] for j in jobs]}")
        sys.exit(0)
    time.sleep(3)
platform = get("/experiment")["params"]["trainingService"]["platform"]
lines = []
for job in jobs:
    finals = job.get("finalMetricData") or []
    final = json.loads(json.loads(finals[-1]["data"])) if finals else {}
    strategy = json.loads(job["hyperParameters"][-1])["parameters"].get("strategy")
    if job["status"] != "SUCCEEDED" or "psnr" not in final or "ssim" not in final:
        print(f"FAIL trial {job['trialJobId']} ({strategy}) {job['status']} {final}")
        sys.exit(0)
    lines.append(f"{strategy} PSNR {final['psnr']:.2f} dB SSIM {final['ssim']:.3f}")
print(f"OK platform {platform}: " + "; ".join(lines))
PYCHECK
)"
echo "$RESULT" >>"$LOG"
case "$RESULT" in
    "OK platform remote:"*) finish 0 "OK, 2 trials succeeded over SSH (${RESULT#OK platform remote: })" ;;
    *) fail "${RESULT:-no answer from the REST API}" ;;
esac
