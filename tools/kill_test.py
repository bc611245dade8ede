#!/usr/bin/env python3
"""Kill tests (standard library only): SIGKILL SwiftUNet's writers at random moments and check that nothing
is lost or left half written, and that rerunning finishes the job exactly.

    kill_test.py UNET WORKDIR [--kills 20] [--seed 1]

train: `unet train --resume` killed KILLS times (half at random moments, half the moment a checkpoint's
temporary file appears, i.e. inside a checkpoint write), then run to the end: its checkpoint_last (weights and
optimizer state) must equal an uninterrupted run's byte for byte; after every kill every file in the run folder
must be readable (config.json, state.json, checkpoint headers and sizes, complete log lines), and no temporary
file may outlive the next start. preprocess, predict (--skip-existing) and synth: killed once mid-run, then
rerun: no partial output, and the result equals an uninterrupted run's.
"""
import argparse, json, os, random, signal, struct, subprocess, sys, time

def fail(message):
    sys.exit("kill-test FAILED: " + message)

def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        fail(" ".join(cmd) + " exited %d: %s" % (r.returncode, r.stdout[-2000:]))
    return r.stdout

def temporaries(folder):
    return [n for n in os.listdir(folder) if n.startswith(".") and ".tmp-" in n] if os.path.isdir(folder) else []

def check_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        fail("%s is %d bytes" % (path, len(data)))
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
    if 8 + n + end != len(data):
        fail("%s: header says %d bytes of data, file has %d" % (path, end, len(data) - 8 - n))

def check_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        fail(path + " is not a .npy file")
    n = struct.unpack("<H", data[8:10])[0]
    header = eval(data[10:10 + n].decode("latin1"), {}, {})  # a Python dict literal by the format's definition
    size = {"<f4": 4, "|u1": 1}[header["descr"]]
    count = 1
    for d in header["shape"]:
        count *= d
    if len(data) != 10 + n + count * size:
        fail("%s: %d bytes, the header needs %d" % (path, len(data), 10 + n + count * size))

def check_run_folder(run):
    for name in ("config.json", "state.json"):
        p = os.path.join(run, name)
        if os.path.exists(p):
            json.load(open(p))
    for name in ("checkpoint_last.safetensors", "checkpoint_best.safetensors"):
        p = os.path.join(run, name)
        if os.path.exists(p):
            check_safetensors(p)
    p = os.path.join(run, "log.jsonl")
    if os.path.exists(p):
        text = open(p).read()
        lines = text.split("\n")
        for line in lines[:-1]:  # the last piece may be a half line a kill left (the next append cuts it)
            if line:
                json.loads(line)

def same_files(a, b, names):
    for n in names:
        if open(os.path.join(a, n), "rb").read() != open(os.path.join(b, n), "rb").read():
            fail("%s differs between %s and %s" % (n, a, b))

def kill_train(unet, work, pre, kills, rng):
    args = [unet, "train", "--data", pre, "--batch", "4", "--filters", "8,16,16,16,16", "--lr", "3e-3", "--seed", "5",
            "--val-every", "50", "--checkpoint-every", "0", "--epochs", "120"]
    ref, run_dir = os.path.join(work, "train-ref"), os.path.join(work, "train-killed")
    run(args + ["-o", ref])
    inside, most_temporaries, done = 0, 0, 0
    while done < kills:
        p = subprocess.Popen(args + ["-o", run_dir, "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done % 2 == 0:
            time.sleep(rng.uniform(0.3, 2.5))
        else:
            # Wait for a checkpoint write to start (its temporary file), then kill at once.
            deadline = time.time() + 20
            while time.time() < deadline and p.poll() is None:
                if any(n.startswith(".checkpoint") for n in temporaries(run_dir)):
                    break
        if p.poll() is not None:
            fail("the run finished after %d kills; make it longer" % done)
        p.send_signal(signal.SIGKILL)
        p.wait()
        done += 1
        left = temporaries(run_dir)
        inside += any(n.startswith(".checkpoint") for n in left)
        most_temporaries = max(most_temporaries, len(left))
        if os.path.isdir(run_dir):
            check_run_folder(run_dir)
    run(args + ["-o", run_dir, "--resume"])
    if temporaries(run_dir):
        fail("temporary files left after the run: %s" % temporaries(run_dir))
    check_run_folder(run_dir)
    same_files(ref, run_dir, ["checkpoint_last.safetensors"])
    print("train: %d kills (%d inside a checkpoint write, leaving its temporary file; at most %d temporary file(s) "
          "at once, none after the next start), resumed to a checkpoint_last byte-identical to the uninterrupted run's"
          % (kills, inside, most_temporaries))
    return os.path.join(ref, "checkpoint_last.safetensors")

def kill_once(cmd, delay, what):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if p.poll() is not None:
        fail("%s finished before it could be killed (%.1f s)" % (what, delay))
    p.send_signal(signal.SIGKILL)
    p.wait()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("unet")
    ap.add_argument("work")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    unet, work = os.path.abspath(a.unet), a.work
    os.makedirs(work, exist_ok=True)

    # synth: killed while writing cases; no dataset.json until every case is written; the rerun completes it.
    synth = [unet, "synth", "--cases", "6", "--procedural", "--seed", "3", "--workers", "1"]
    data, ref = os.path.join(work, "data"), os.path.join(work, "data-ref")
    run(synth + ["-o", ref])
    kill_once(synth + ["-o", data], rng.uniform(1.0, 2.0), "synth")
    if os.path.exists(os.path.join(data, "dataset.json")):
        fail("a killed synth left a dataset.json (a dataset that claims cases it may not have)")
    for sub in ("imagesTr", "labelsTr"):
        for n in os.listdir(os.path.join(data, sub)):
            if not n.startswith("."):
                run([unet, "info", os.path.join(data, sub, n)])  # complete, readable
    run(synth + ["-o", data])
    names = ["dataset.json", "phantom.json"] + ["%s/BRATS_%03d.nii.gz" % (s, i) for s in ("imagesTr", "labelsTr") for i in range(1, 7)]
    same_files(ref, data, names)
    if temporaries(data) or temporaries(os.path.join(data, "imagesTr")) or temporaries(os.path.join(data, "labelsTr")):
        fail("synth left temporary files")
    print("synth: killed mid-run, no dataset.json left; rerun completed, byte-identical to an uninterrupted run")

    # preprocess: killed mid-run; every .npy present is complete; the rerun skips finished cases and completes.
    pre, pre_ref = os.path.join(work, "pre"), os.path.join(work, "pre-ref")
    run([unet, "preprocess", "--data", data, "-o", pre_ref, "--dim", "2"])
    kill_once([unet, "preprocess", "--data", data, "-o", pre, "--dim", "2", "--workers", "1"], rng.uniform(1.0, 2.0), "preprocess")
    for n in os.listdir(pre):
        if n.endswith(".npy"):
            check_npy(os.path.join(pre, n))
    out = run([unet, "preprocess", "--data", data, "-o", pre, "--dim", "2"])
    if temporaries(pre):
        fail("preprocess left temporary files")
    same_files(pre_ref, pre, sorted(n for n in os.listdir(pre_ref) if n.endswith(".npy") or n == "splits.json"))
    print("preprocess: killed mid-run, every file present complete; rerun (%s) byte-identical to an uninterrupted run"
          % out.strip().splitlines()[-1])

    model = kill_train(unet, work, pre, a.kills, rng)

    # predict: killed mid-run; the rerun with --skip-existing finishes the other cases.
    images = os.path.join(data, "imagesTr")
    pred, pred_ref = os.path.join(work, "pred"), os.path.join(work, "pred-ref")
    run([unet, "predict", "--model", model, "-i", images, "-o", pred_ref])
    kill_once([unet, "predict", "--model", model, "-i", images, "-o", pred], rng.uniform(2.0, 4.0), "predict")
    finished = [n for n in os.listdir(pred) if not n.startswith(".")]
    for n in finished:
        run([unet, "info", os.path.join(pred, n)])
    out = run([unet, "predict", "--model", model, "-i", images, "-o", pred, "--skip-existing"])
    if temporaries(pred):
        fail("predict left temporary files")
    same_files(pred_ref, pred, sorted(os.listdir(pred_ref)))
    print("predict: killed after %d of 6 cases; rerun with --skip-existing (%s) byte-identical to an uninterrupted run"
          % (len(finished), out.strip().splitlines()[-1]))
    print("kill-test OK")

main()
