#!/usr/bin/env python3
"""Streaming benchmark for layerwise: does a model larger than the budget run as fast as its
bytes can be read, and how does it compare with llama.cpp's mmap and AirLLM held to the same
memory?

    python3 bench/stream_bench.py [--shape llama2-7b] [--dtype f16] [--budgets 2GiB,6GiB]
        [--prefill 256] [--decode 4] [--no-llama] [--airllm-python PY] [--keep] [--json OUT]

Steps: describe the machine; write a random-weight checkpoint (build/make_checkpoint), and with
llama.cpp its GGUF twin (bench/hf_to_gguf.py); per budget, `layerwise info` (the plan and its
predicted decode sweep) and `layerwise generate --io direct --profile`, each after fio measures
the disk reading the whole file as the engine reads; at the first budget also --no-prefetch,
--io auto in a memory cgroup limited to the budget, llama-bench (mmap) and AirLLM
(bench/airllm_run.py) in the same limit; print one table; delete the scratch files unless
--keep. See bench/README.md.

Needs fio, root for the cgroup and the huge-page probe, numpy and gguf for the GGUF file, and a
Python with airllm and torch for AirLLM (optional). Also the shared helpers of the other
benchmarks (machine description, spawning, memory cgroups, llama.cpp lookup).
"""
import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_CHECKPOINT_SOURCE = os.path.join(ROOT, "bench", "make_checkpoint.cpp")

# hidden, layers, heads, kv_heads, ffn, vocab: a copy of kShapes in bench/make_checkpoint.cpp,
# used only when that file cannot be read (the file wins when both are there).
FALLBACK_SHAPES = {
    "tiny": (64, 4, 4, 2, 160, 512),
    "small": (512, 16, 8, 4, 1408, 8000),
    "tinyllama-1.1b": (2048, 22, 32, 4, 5632, 32000),
    "llama2-7b": (4096, 32, 32, 32, 11008, 32000),
}
DTYPE_BYTES = {"f32": 4, "float32": 4, "f16": 2, "float16": 2, "bf16": 2, "bfloat16": 2}
# Quantized runs: an F16 checkpoint, its F16 GGUF twin, then llama.cpp's llama-quantize to this type
# (its name for it); both engines read the quantized file, and only it stays on disk.
QUANTIZED = {"q4_k_m": "Q4_K_M", "q4_0": "Q4_0", "q8_0": "Q8_0"}
# Mirrors src/io/read_pipeline.h: direct reads of 1 MiB, up to 8 in flight through io_uring.
ENGINE_READ_BYTES = 1 << 20
ENGINE_READ_DEPTH = 8


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------------- sizes and text

def parse_size(text):
    """Same rules as lw::parse_size: 4GiB, 300MiB, 1.5G (decimal), 65536."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError("'%s' is not a size (examples: 4GiB, 300MiB, 1.5G, 65536)" % text)
    scales = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}
    unit = match.group(2).lower()
    if unit not in scales:
        raise argparse.ArgumentTypeError("'%s': unknown unit '%s' (use B, KiB, MiB, GiB, KB, MB, GB)" % (text, unit))
    value = round(float(match.group(1)) * scales[unit])
    if value < 1:
        raise argparse.ArgumentTypeError("'%s' is not a usable size" % text)
    return int(value)


def parse_engine_size(text):
    """Reads back lw::format_size output ("195.69 MiB", "512 B"); returns (bytes, resolution)."""
    match = re.fullmatch(r"\s*([0-9.]+) (B|KiB|MiB|GiB|TiB)\s*", text)
    if not match:
        raise ValueError("not a size: %r" % text)
    scale = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}[match.group(2)]
    return float(match.group(1)) * scale, (0.005 * scale if scale > 1 else 0.5)


def fmt_size(n):
    """Binary units, like the engine prints them."""
    if n is None:
        return "n/a"
    value, units = float(n), ["B", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return "%d B" % n if unit == 0 else "%.2f %s" % (value, units[unit])


def fmt_gbps(bytes_per_second):
    return "n/a" if bytes_per_second is None else "%.2f GB/s" % (bytes_per_second / 1e9)


def fmt_seconds(s):
    if s is None:
        return "n/a"
    return "%.1f ms" % (s * 1e3) if s < 1 else "%.3f s" % s


def fmt_ratio(x):
    return "n/a" if x is None else "%.2fx" % x


def print_table(headers, rows, out=sys.stdout):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, headers))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print("  ".join(("%-*s" if i == 0 else "%*s") % (w, c) for i, (w, c) in enumerate(zip(widths, row))).rstrip(),
              file=out)


def say(text=""):
    print(text, flush=True)


# ----------------------------------------------------------------------------- the machine

def read_proc_kv(path):
    values = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                values.setdefault(key.strip(), rest.strip())
    except OSError:
        pass
    return values


def meminfo_bytes(key):
    value = read_proc_kv("/proc/meminfo").get(key, "")
    parts = value.split()
    return int(parts[0]) * 1024 if parts and parts[0].isdigit() else None


def cgroup_memory_limit():
    """The memory limit of this process's cgroup (v2 or v1), as the engine reads it; None if none."""
    limit = None
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, group = parts[1], parts[2]
        if controllers == "":
            path = "/sys/fs/cgroup" + group + "/memory.max"
        elif "memory" in controllers.split(","):
            path = "/sys/fs/cgroup/memory" + group + "/memory.limit_in_bytes"
        else:
            continue
        try:
            with open(path) as f:
                text = f.read().strip()
            if text != "max" and 0 < int(text) < (1 << 60):
                limit = int(text) if limit is None else min(limit, int(text))
        except (OSError, ValueError):
            pass
    return limit


def mount_of(path):
    """(device, mount point, fs type) of the filesystem holding path."""
    path = os.path.realpath(path)
    best = ("?", "/", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[1]):
                    best = (fields[0], point, fields[2])
    except OSError:
        pass
    return best


def disk_kind(device):
    name = os.path.basename(device)
    for candidate in (name, re.sub(r"p?\d+$", "", name)):
        try:
            with open("/sys/block/%s/queue/rotational" % candidate) as f:
                return "sysfs: rotational" if f.read().strip() == "1" else "sysfs: non-rotational"
        except OSError:
            continue
    return "unknown kind"


def describe_machine(workdir):
    cpu = read_proc_kv("/proc/cpuinfo")
    flags = set(cpu.get("flags", "").split())
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            physical = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((physical, core))
                    physical = core = None
            if core is not None:
                cores.add((physical, core))
    except OSError:
        pass
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    simd = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve") if f in flags]
    total, available = meminfo_bytes("MemTotal"), meminfo_bytes("MemAvailable")
    limit = cgroup_memory_limit()
    usage = shutil.disk_usage(workdir)
    device, point, fstype = mount_of(workdir)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    info = {
        "cpu": cpu.get("model name") or cpu.get("Model") or platform.processor() or platform.machine(),
        "logical_cpus": logical,
        "physical_cores": len(cores) or None,
        "usable_cpus": usable,
        "simd": simd,
        "virtualized": "hypervisor" in flags,
        "ram_total": total,
        "ram_available": available,
        "cgroup_limit": limit,
        "disk_device": device,
        "disk_mount": point,
        "disk_fs": fstype,
        "disk_kind": disk_kind(device),
        "disk_free": usage.free,
        "disk_total": usage.total,
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "load_average": load,
    }
    say("machine")
    say("  cpu           %s; %d logical CPUs (%s physical cores), %d usable by this process; %s%s" % (
        info["cpu"], logical, info["physical_cores"] or "?", usable, " ".join(simd) or "no AVX2/NEON flags seen",
        "; running under a hypervisor" if info["virtualized"] else ""))
    say("  memory        %s total, %s available%s" % (
        fmt_size(total), fmt_size(available), "; cgroup limit %s" % fmt_size(limit) if limit else ""))
    say("  disk          %s free of %s on %s (%s, %s, %s) for %s" % (
        fmt_size(usage.free), fmt_size(usage.total), point, device, fstype, info["disk_kind"], workdir))
    say("  kernel        %s; Python %s" % (info["kernel"], platform.python_version()))
    say("  load average  %.2f %.2f %.2f (1/5/15 min)%s" % (
        load[0], load[1], load[2],
        "  <- other work is running: timings will be noisy" if load[0] > 0.5 * max(1, usable) else ""))
    return info


# ----------------------------------------------------------------------------- the checkpoint

def known_shapes():
    shapes = dict(FALLBACK_SHAPES)
    try:
        with open(MAKE_CHECKPOINT_SOURCE) as f:
            source = f.read()
        found = re.findall(r'\{\s*"([^"]+)"\s*,\s*\{\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\}\s*\}',
                           source)
        if found:
            shapes = {name: tuple(int(v) for v in values) for name, *values in found}
    except OSError:
        pass
    return shapes


def checkpoint_bytes(shape, dtype):
    """Bytes of the tensors make_checkpoint writes (untied Llama, no biases)."""
    hidden, layers, heads, kv_heads, ffn, vocab = shape
    head_dim = hidden // heads
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    per_layer = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden + 3 * hidden * ffn + 2 * hidden
    parameters = vocab * hidden + layers * per_layer + hidden + vocab * hidden
    return parameters, parameters * DTYPE_BYTES[dtype]


def run_tool(command, what):
    say("  $ " + " ".join(command))
    start = time.monotonic()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise BenchError("%s failed (exit status %d) after %.1f s: %s\nstdout:\n%s\nstderr:\n%s" % (
            what, result.returncode, seconds, " ".join(command), result.stdout[-4000:], result.stderr[-4000:]))
    return seconds, result


# ----------------------------------------------------------------------------- engine runs

SIZE = r"([0-9.]+ [KMGT]?i?B)"
STAT_PATTERNS = {
    "load": re.compile(r"^load\s+([0-9.]+) s$", re.M),
    "prefill": re.compile(r"^prefill\s+(\d+) tokens in ([0-9.]+) s \(([0-9.]+) tokens/s\)$", re.M),
    "decode": re.compile(r"^decode\s+(\d+) tokens in ([0-9.]+) s \(([0-9.]+) tokens/s\)$", re.M),
    "sweeps": re.compile(r"^sweeps\s+(\d+) in ([0-9.]+) s; layer loads (\d+); read " + SIZE + r" in ([0-9.]+) s "
                         r"\(([0-9.]+) GB/s\); waited for reads ([0-9.]+) s \((\d+)% of reading hidden\)$", re.M),
    "reads": re.compile(r"^reads\s+(direct|through the page cache)", re.M),
    "memory": re.compile(r"^memory\s+budget " + SIZE + r"; plan " + SIZE + r" \((\d+) of (\d+) layers resident\); "
                         r"peak RSS " + SIZE + r"$", re.M),
}
# Only when the run generated more than one token.
SWEEP_PATTERN = re.compile(r"^per sweep (\d+) decode sweeps \(([0-9.]+) tokens each\): ([0-9.]+) s = computing ([0-9.]+) s "
                           r"\+ waiting for reads ([0-9.]+) s; read " + SIZE + r" in ([0-9.]+) s", re.M)

FIRST_SWEEP_PATTERN = re.compile(r"^profile\s+1\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", re.M)


def parse_stats(stderr):
    missing = [k for k, p in STAT_PATTERNS.items() if not p.search(stderr)]
    if missing:
        raise ValueError("statistics line(s) missing or in an unexpected format: " + ", ".join(missing))
    m = {k: p.search(stderr) for k, p in STAT_PATTERNS.items()}
    stats = {
        "load_s": float(m["load"].group(1)),
        "prefill_tokens": int(m["prefill"].group(1)),
        "prefill_s": float(m["prefill"].group(2)),
        "prefill_tps": float(m["prefill"].group(3)),
        "decode_tokens": int(m["decode"].group(1)),
        "decode_s": float(m["decode"].group(2)),
        "decode_tps": float(m["decode"].group(3)),
        "sweeps": int(m["sweeps"].group(1)),
        "sweeps_s": float(m["sweeps"].group(2)),
        "unit_loads": int(m["sweeps"].group(3)),
        "read_bytes": parse_engine_size(m["sweeps"].group(4))[0],
        "read_s": float(m["sweeps"].group(5)),
        "read_gbps": float(m["sweeps"].group(6)),
        "wait_s": float(m["sweeps"].group(7)),
        "hidden_pct": int(m["sweeps"].group(8)),
        "direct": m["reads"].group(1) == "direct",
        "budget": parse_engine_size(m["memory"].group(1))[0],
        "plan": parse_engine_size(m["memory"].group(2))[0],
        "resident_units": int(m["memory"].group(3)),
        "units": int(m["memory"].group(4)),
        "engine_peak_rss": parse_engine_size(m["memory"].group(5))[0],
        "decode_sweep": None,
        "first_sweep": None,
    }
    first = FIRST_SWEEP_PATTERN.search(stderr)
    if first:  # with --profile: the prefill sweep
        stats["first_sweep"] = {"tokens": int(first.group(1)), "seconds": float(first.group(2)),
                                "compute_s": float(first.group(3)), "wait_s": float(first.group(4)),
                                "read_bytes": float(first.group(5)) * (1 << 20), "read_s": float(first.group(6))}
    sweep = SWEEP_PATTERN.search(stderr)
    if sweep:
        stats["decode_sweep"] = {
            "count": int(sweep.group(1)), "seconds": float(sweep.group(3)), "compute_s": float(sweep.group(4)),
            "wait_s": float(sweep.group(5)), "read_bytes": parse_engine_size(sweep.group(6))[0],
            "read_s": float(sweep.group(7))}
    return stats


def proc_status_bytes(key):
    value = read_proc_kv("/proc/self/status").get(key, "").split()
    return int(value[0]) * 1024 if value and value[0].isdigit() else None


def reset_own_peak_rss():
    """A child's ru_maxrss starts from this process's own peak RSS: Linux folds the peak of the
    address space exec() replaces into it. Writing 5 to clear_refs resets that peak to the current
    RSS, so the probes' buffers do not show up as the engine's peak. Returns the floor that stays."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return proc_status_bytes("VmHWM")


def make_workdir(requested, prefix):
    """The scratch folder: --workdir (made if missing) or a new one under /tmp. Returns it and
    whether this run created it (and so may delete it)."""
    if requested:
        workdir = os.path.abspath(requested)
        if os.path.isdir(workdir):
            return workdir, False
        os.makedirs(workdir)
        return workdir, True
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp"), True


def spawn(command, preexec=None, timeout=None):
    """Runs command with its output in files, killed after `timeout` seconds; returns (exit code,
    stdout, stderr, wall s, CPU s, wait4 peak RSS, this script's RSS floor, timed out)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        floor = reset_own_peak_rss() or 0
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, preexec_fn=preexec)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            if timer:
                timer.cancel()
        wall = time.monotonic() - start
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code
        out.seek(0)
        err.seek(0)
        return (code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), wall,
                usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, floor, timed_out.is_set())


def run_engine(name, command, parse=None, timeout=None, cgroup=None):
    """Runs one command (by default a `layerwise generate`) in a fresh process, inside `cgroup`
    (a MemoryCgroup) if given; parse(stdout, stderr) reads its results (default: the engine's
    statistics). Its own peak RSS comes from wait4() on its pid (it cannot read below this
    script's own peak RSS at the time of the spawn, kept as the floor). After `timeout` seconds
    it is killed."""
    parse = parse or (lambda stdout, stderr: parse_stats(stderr))
    say("  %s\n    $ %s%s" % (name, " ".join(c if " " not in c else "'%s'" % (c[:40] + " ...") for c in command),
                              "   [in memory cgroup %s, limit %s]" % (cgroup.path, fmt_size(cgroup.limit)) if cgroup else ""))
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0
    code, stdout, stderr, wall, cpu, rss, floor, timed_out = spawn(command, preexec=cgroup.enter if cgroup else None,
                                                                   timeout=timeout)
    run = {"mode": name, "command": command, "exit": code, "wall_s": wall, "cpu_s": cpu, "wait4_peak_rss": rss,
           "wait4_floor": floor, "stdout": stdout, "stderr": stderr, "load_before": load_before, "error": None, "stats": None,
           "cgroup": cgroup.report() if cgroup else None}
    if timed_out:
        run["error"] = "killed after the %d s time limit" % timeout
    elif code == -signal.SIGKILL:
        failed = run["cgroup"].get("failcnt") if cgroup else None
        run["error"] = "killed by SIGKILL" + (" (the cgroup's memory limit: %d failed charges)" % failed if failed else "")
    elif code != 0:
        run["error"] = "exit status %d" % code
    else:
        try:
            run["stats"] = parse(stdout, stderr)
        except ValueError as e:
            run["error"] = str(e)
    if run["error"]:
        say("    FAILED: %s\n    stdout (tail):\n%s\n    stderr (tail):\n%s" % (
            run["error"], indent(stdout[-3000:]), indent(stderr[-3000:])))
    else:
        lines = [line for line in stderr.rstrip().splitlines() if not line.startswith("profile ") and "%|" not in line]
        say(indent("\n".join(lines[-25:]), "    | "))
        say("    wall %.2f s, CPU %.2f s (%.1f cores busy on average), peak RSS by wait4 %s (cannot read below %s, "
            "this script's own peak at the spawn)%s; load average before %.2f" % (
                wall, cpu, cpu / wall if wall > 0 else 0, fmt_size(rss), fmt_size(floor),
                "; cgroup peak %s" % fmt_size(run["cgroup"]["max_usage"]) if cgroup and run["cgroup"]["max_usage"] else "",
                load_before))
    return run


def indent(text, prefix="      "):
    return "\n".join(prefix + line for line in text.splitlines())


# ----------------------------------------------------------------------------- the disk

def fio_read(path, size, seconds, huge_pages=False):
    """fio reading `path` the way the engine reads around the page cache: O_DIRECT, 1 MiB reads,
    8 in flight through io_uring; into buffers on huge pages (as the engine's are) when asked,
    which needs a few reserved for the run. Returns bytes per second, or raises BenchError."""
    if not shutil.which("fio"):
        raise BenchError("fio is not installed (apt-get install fio): it measures the disk limit")
    command = ["fio", "--name=disk", "--filename=" + path, "--readonly", "--rw=read", "--direct=1",
               "--ioengine=io_uring", "--bs=%d" % ENGINE_READ_BYTES, "--iodepth=%d" % ENGINE_READ_DEPTH,
               "--size=%d" % size, "--runtime=%d" % seconds, "--output-format=json"]
    reserved = "/proc/sys/vm/nr_hugepages"
    before = None
    if huge_pages:
        with open(reserved) as f:
            before = int(f.read())
        with open(reserved, "w") as f:
            f.write(str(before + ENGINE_READ_BYTES * ENGINE_READ_DEPTH // (2 << 20) + 4))
        command.append("--iomem=shmhuge")
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    finally:
        if before is not None:
            with open(reserved, "w") as f:
                f.write(str(before))
    if result.returncode != 0:
        raise BenchError("fio failed: %s\n%s" % (" ".join(command), result.stderr[-2000:]))
    job = json.loads(result.stdout[result.stdout.index("{"):])["jobs"][0]["read"]
    return job["io_bytes"] / (job["runtime"] / 1000.0)


# ----------------------------------------------------------------------------- memory limits

def drop_file_cache(path):
    """Evicts the file's clean pages, so a run in a cgroup faults them in (and is charged for them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class MemoryCgroup:
    """A child of this process's own memory cgroup with a limit, for one command (v1 or v2)."""

    def __init__(self, limit):
        self.limit, self.path, self.version = limit, None, None
        base, version, why = self.own_memory_cgroup()
        if base is None:
            raise OSError(why)
        path = os.path.join(base, "layerwise-bench-%d" % os.getpid())
        os.mkdir(path)
        self.path, self.version = path, version
        try:
            name = "memory.limit_in_bytes" if version == 1 else "memory.max"
            with open(os.path.join(path, name), "w") as f:
                f.write(str(limit))
            with open(os.path.join(path, name)) as f:
                if int(f.read().strip()) > limit:
                    raise OSError("the limit written to %s did not hold" % name)
        except OSError:
            self.remove()
            raise

    @staticmethod
    def own_memory_cgroup():
        try:
            with open("/proc/self/cgroup") as f:
                lines = [line.strip().split(":", 2) for line in f if line.strip()]
            with open("/proc/mounts") as f:
                mounts = [line.split() for line in f]
        except OSError as e:
            return None, None, str(e)
        for _, controllers, group in lines:
            if "memory" in controllers.split(","):
                for m in mounts:
                    if m[2] == "cgroup" and "memory" in m[3].split(","):
                        path = m[1] + group
                        if os.path.exists(os.path.join(path, "memory.limit_in_bytes")):
                            return path, 1, None
        for _, controllers, group in lines:
            if controllers == "":
                for m in mounts:
                    if m[2] == "cgroup2":
                        path = m[1] + group
                        try:
                            with open(os.path.join(path, "cgroup.subtree_control")) as f:
                                if "memory" in f.read().split():
                                    return path, 2, None
                        except OSError:
                            continue
                return None, None, "cgroup v2 without the memory controller enabled for this process's children"
        return None, None, "no memory cgroup controller is mounted"

    def enter(self):  # runs in the child between fork and exec
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def report(self):
        result = {"path": self.path, "version": self.version, "limit": self.limit}
        names = {"max_usage": ("memory.max_usage_in_bytes", "memory.peak"), "failcnt": ("memory.failcnt", None)}
        for key, (v1, v2) in names.items():
            name = v1 if self.version == 1 else v2
            try:
                with open(os.path.join(self.path, name)) as f:
                    result[key] = int(f.read().split()[0])
            except (OSError, TypeError, ValueError, IndexError):
                result[key] = None
        if self.version == 2:
            try:
                with open(os.path.join(self.path, "memory.events")) as f:
                    events = dict(line.split() for line in f if line.strip())
                result["failcnt"] = int(events.get("max", 0))
                result["oom_kill"] = int(events.get("oom_kill", 0))
            except OSError:
                pass
        return result

    def remove(self):
        if not self.path:
            return
        for _ in range(50):
            try:
                os.rmdir(self.path)
                self.path = None
                return
            except OSError:
                time.sleep(0.1)


# ----------------------------------------------------------------------------- the runs

INFO_PATTERNS = {
    "resident": re.compile(r"^  resident units\s+(\d+) of (\d+)", re.M),
    "read": re.compile(r"^  read per sweep\s+" + SIZE, re.M),
    "measured": re.compile(r"^  measured\s+reads ([0-9.]+) GB/s, kernels ([0-9.]+) GB/s", re.M),
    "predicted": re.compile(r"^  decode sweep\s+([0-9.]+) s predicted: reading ([0-9.]+) s, computing ([0-9.]+) s", re.M),
}


def plan_prediction(layerwise, model, budget, context):
    _, result = run_tool([layerwise, "info", "--model", model, "--max-memory", str(budget), "--io", "direct",
                          "--context", str(context)], "layerwise info")
    m = {k: p.search(result.stdout) for k, p in INFO_PATTERNS.items()}
    if not all(m.values()):
        raise BenchError("layerwise info printed no plan or prediction:\n" + result.stdout)
    prediction = {"resident_units": int(m["resident"].group(1)), "units": int(m["resident"].group(2)),
                  "read_bytes": parse_engine_size(m["read"].group(1))[0],
                  "probe_read_gbps": float(m["measured"].group(1)), "kernel_gbps": float(m["measured"].group(2)),
                  "sweep_s": float(m["predicted"].group(1)), "read_s": float(m["predicted"].group(2)),
                  "compute_s": float(m["predicted"].group(3))}
    say("    plan: %d of %d layers resident, %s read per sweep; predicted decode sweep %s (reading %s at the %.2f GB/s "
        "info measured, computing %s)" % (prediction["resident_units"], prediction["units"],
                                          fmt_size(prediction["read_bytes"]), fmt_seconds(prediction["sweep_s"]),
                                          fmt_seconds(prediction["read_s"]), prediction["probe_read_gbps"],
                                          fmt_seconds(prediction["compute_s"])))
    return prediction


def parse_llama_bench(decode):
    def parse(stdout, stderr):
        tests = json.loads(stdout[stdout.index("["):])
        for test in tests:
            if test.get("n_gen") == decode and test.get("n_prompt") == 0:
                return {"decode_tps": test["avg_ts"], "decode_sweep_s": 1.0 / test["avg_ts"]}
        raise ValueError("llama-bench's JSON lacks the tg%d test" % decode)
    return parse


def parse_airllm(stdout, stderr):
    found = re.search(r"^seconds_per_token ([0-9.]+)$", stdout, re.M)
    if not found:
        raise ValueError("bench/airllm_run.py printed no seconds_per_token")
    return {"decode_sweep_s": float(found.group(1)), "decode_tps": 1.0 / float(found.group(1))}


def measured_disk(path):
    """The whole checkpoint file once, as a sweep reads it (at most 30 s each): into fio's own
    buffers on 4 KiB pages, and on huge pages as the engine's buffers are (as root). The larger
    is the limit."""
    small = fio_read(path, os.path.getsize(path), 30)
    huge = fio_read(path, os.path.getsize(path), 30, huge_pages=True) if os.geteuid() == 0 else None
    say("  disk          %s into buffers on huge pages, %s on 4 KiB pages   [fio: the whole file, O_DIRECT, %d KiB "
        "reads, %d in flight through io_uring, as the engine reads]" % (
            fmt_gbps(huge) if huge else "not measured (needs root)", fmt_gbps(small), ENGINE_READ_BYTES >> 10,
            ENGINE_READ_DEPTH))
    return max(small, huge or 0)


def report(rows, args):
    say()
    say("results (decode sweep: one pass over every layer for one new token; limit: bytes read per sweep / the disk "
        "bandwidth fio measured just before the run)")
    headers = ["run", "budget", "reads", "resident", "decode s/sweep", "read/sweep", "disk GB/s", "limit s",
               "sweep/limit", "predicted s", "sweep/pred.", "hidden", "prefill tok/s (hidden)", "peak memory", "vs ours"]
    ours = next((r for r in rows if r["name"] == "layerwise" and r.get("sweep_s")), None)
    table = []
    for r in rows:
        if r.get("error"):
            table.append([r["name"], fmt_size(r["budget"]), "FAILED: " + r["error"][:70]] + [""] * (len(headers) - 3))
            continue
        limit = r["read_bytes"] / r["disk_bps"] if r.get("read_bytes") and r.get("disk_bps") else None
        same_budget = ours and ours["budget"] == r["budget"]
        table.append([
            r["name"], fmt_size(r["budget"]), r.get("reads", ""), r.get("resident", ""), fmt_seconds(r["sweep_s"]),
            fmt_size(r["read_bytes"]) if r.get("read_bytes") is not None else "", fmt_gbps(r["disk_bps"])[:-5]
            if r.get("disk_bps") else "", fmt_seconds(limit) if limit else "",
            fmt_ratio(r["sweep_s"] / limit) if limit else "",
            fmt_seconds(r["predicted_s"]) if r.get("predicted_s") else "",
            fmt_ratio(r["sweep_s"] / r["predicted_s"]) if r.get("predicted_s") else "",
            "%d%%" % r["hidden_pct"] if r.get("hidden_pct") is not None else "",
            "%.1f (%s)" % (r["prefill_tps"], "%d%%" % r["prefill_hidden_pct"] if r.get("prefill_hidden_pct") is not None
                           else "?") if r.get("prefill_tps") else "",
            fmt_size(r["peak"]) if r.get("peak") else "",
            fmt_ratio(r["sweep_s"] / ours["sweep_s"]) if same_budget and r is not ours else "",
        ])
    print_table(headers, table)
    for r in rows:
        if r.get("peak") and r["name"].startswith("layerwise") and r["peak"] > r["budget"]:
            say("  !! %s: peak memory %s is over the budget %s" % (r["name"], fmt_size(r["peak"]), fmt_size(r["budget"])))
        if r.get("note"):
            say("  %s: %s" % (r["name"], r["note"]))


def main():
    shapes = known_shapes()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Column meanings: bench/README.md")
    parser.add_argument("--shape", default="llama2-7b", choices=sorted(shapes), help="checkpoint shape (default llama2-7b)")
    parser.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16"] + sorted(QUANTIZED),
                        help="checkpoint dtype (default f16); q4_k_m, q4_0, q8_0: a GGUF file quantized by llama-quantize "
                             "from the F16 one, read by both engines (AirLLM is not run)")
    parser.add_argument("--budgets", default="2GiB,6GiB",
                        help="--max-memory of the runs, comma-separated; llama.cpp, AirLLM and the no-prefetch run use "
                             "the first (default 2GiB,6GiB)")
    parser.add_argument("--prefill", default=256, type=int,
                        help="prompt tokens (default 256: a prefill sweep long enough to hide the reading)")
    parser.add_argument("--decode", default=4, type=int, help="new tokens per run (default 4: 3 decode sweeps)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine (default: all)")
    parser.add_argument("--timeout", default=900, type=int, help="seconds before a run is killed (default 900)")
    parser.add_argument("--no-llama", action="store_true", help="skip llama.cpp")
    parser.add_argument("--llama-bin", help="folder with llama-bench (default: bench/build_llama_cpp.sh's)")
    parser.add_argument("--airllm-python", help="a Python with airllm and torch installed: runs bench/airllm_run.py")
    parser.add_argument("--seed", default=1, type=int, help="seed of the random prompt (default 1)")
    parser.add_argument("--workdir", help="scratch folder (default: a new folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"), help="where layerwise and make_checkpoint are")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    budgets = [parse_size(b) for b in args.budgets.split(",")]
    if args.prefill < 1 or args.decode < 2:
        parser.error("--prefill must be at least 1 and --decode at least 2 (the first token comes from prefill)")

    layerwise, make_checkpoint = engine_tools(args.build_dir)
    workdir, created_workdir = make_workdir(args.workdir, "layerwise-stream-")
    hf_dir, gguf_path, airllm_dir = (os.path.join(workdir, name) for name in ("hf", "model.gguf", "airllm"))
    created = []
    rows = []
    results = {"args": vars(args), "rows": rows}
    try:
        results["machine"] = machine = describe_machine(workdir)
        shape = shapes[args.shape]
        quantized = QUANTIZED.get(args.dtype)
        made = "f16" if quantized else args.dtype  # what make_checkpoint and hf_to_gguf.py write
        if quantized and (args.no_llama or args.airllm_python):
            raise BenchError("--dtype %s files are made by llama.cpp's llama-quantize (not with --no-llama) and AirLLM "
                             "cannot read them (leave out --airllm-python)" % args.dtype)
        parameters, model_bytes = checkpoint_bytes(shape, made)
        copies = 1 + (not args.no_llama) + bool(args.airllm_python)
        say()
        say("checkpoint")
        say("  %s %s: %.1f M parameters, %s; %d copies (HF%s%s) need %s, %s free in %s" % (
            args.shape, made, parameters / 1e6, fmt_size(model_bytes), copies,
            ", GGUF" if not args.no_llama else "", ", AirLLM's split" if args.airllm_python else "",
            fmt_size(copies * model_bytes), fmt_size(machine["disk_free"]), workdir))
        if machine["disk_free"] < copies * model_bytes * 1.05:
            raise BenchError("not enough disk space in %s (pass --workdir on a bigger disk)" % workdir)
        created.append(hf_dir)
        seconds, _ = run_tool([make_checkpoint, "--shape", args.shape, "--dtype", made, "--out", hf_dir, "--quiet"],
                              "make_checkpoint")
        weights = os.path.join(hf_dir, "model.safetensors")
        say("    wrote %s in %.1f s" % (fmt_size(os.path.getsize(weights)), seconds))
        vocab = int(json.load(open(os.path.join(hf_dir, "config.json")))["vocab_size"])
        llama_bench = None
        model = hf_dir
        if not args.no_llama:
            llama_dir, _ = find_llama_cpp(args.llama_bin, "llama-bench")
            llama_bench = os.path.join(llama_dir, "llama-bench")
            created.append(gguf_path)
            float_gguf = gguf_path + ".f16.gguf" if quantized else gguf_path
            created.append(float_gguf)
            # The GGUF writer's peak is a few copies of the largest tensor (bench/hf_to_gguf.py).
            run_tool([sys.executable, os.path.join(ROOT, "bench", "hf_to_gguf.py"), hf_dir, float_gguf, "--outtype",
                      made], "hf_to_gguf.py")
            if quantized:
                shutil.rmtree(hf_dir)
                seconds, _ = run_tool([os.path.join(llama_dir, "llama-quantize"), float_gguf, gguf_path, quantized,
                                       str(args.threads)], "llama-quantize")
                os.remove(float_gguf)
                weights = model = gguf_path
                say("    llama-quantize wrote %s (%s) in %.1f s; the checkpoint and the F16 GGUF file are deleted" % (
                    fmt_size(os.path.getsize(gguf_path)), quantized, seconds))
        _, version, no_cgroup = MemoryCgroup.own_memory_cgroup()
        say("  cgroup        %s" % ("not available (%s): llama.cpp and AirLLM cannot be held to the budget, so they "
                                    "are not run" % no_cgroup if no_cgroup else
                                    "v%d: llama.cpp, AirLLM and layerwise --io auto run in a child of this process's "
                                    "memory cgroup limited to the budget, page cache included" % version))

        rng = random.Random(args.seed)
        prompt = [rng.randrange(3, vocab) for _ in range(args.prefill)]
        prompt_text = " ".join(map(str, prompt))
        context = args.prefill + args.decode
        base = [layerwise, "generate", "--model", model, "--prompt-ids", prompt_text, "--max-new-tokens",
                str(args.decode), "--ignore-eos", "--threads", str(args.threads)]

        def in_cgroup(name, budget, command, files, **run_args):
            """Runs command in a memory cgroup limited to budget, after evicting `files` from the
            page cache (pages cached earlier stay charged to whoever read them, escaping the limit)."""
            if no_cgroup:
                return {"error": "not run: " + no_cgroup, "stats": None, "cgroup": None}
            cgroup = MemoryCgroup(budget)
            try:
                for path in files:
                    drop_file_cache(path)
                return run_engine(name, command, cgroup=cgroup, **run_args)
            finally:
                cgroup.remove()

        def ours(name, budget, extra, predicted=None, limited=False):
            disk = measured_disk(weights)
            command = base + ["--max-memory", str(budget), "--profile"] + extra
            run = in_cgroup(name, budget, command, [weights], timeout=args.timeout) if limited else \
                run_engine(name, command, timeout=args.timeout)
            row = {"name": name, "budget": budget, "disk_bps": disk, "error": run["error"]}
            if run["stats"]:
                st, sweep = run["stats"], run["stats"]["decode_sweep"]
                row.update({"reads": "direct" if st["direct"] else "cached", "resident": "%d of %d" % (
                    st["resident_units"], st["units"]), "sweep_s": sweep["seconds"], "read_bytes": sweep["read_bytes"],
                    "predicted_s": predicted, "hidden_pct": round(100 * (1 - min(1, sweep["wait_s"] / sweep["read_s"])))
                    if sweep["read_s"] else 100, "peak": max(st["engine_peak_rss"], run["wait4_peak_rss"],
                                                               (run["cgroup"] or {}).get("max_usage") or 0),
                    "prefill_tps": st["prefill_tps"], "prefill_hidden_pct": round(100 * (1 - min(
                        1, st["first_sweep"]["wait_s"] / st["first_sweep"]["read_s"]))) if st["first_sweep"] and
                    st["first_sweep"]["read_s"] else None,
                    "stats": st, "output": run["stdout"].split()})
            rows.append(row)

        def others(name, budget, command, parse, files, read_bytes):
            disk = measured_disk(weights) if not no_cgroup else None
            run = in_cgroup(name, budget, command, files, parse=parse, timeout=args.timeout)
            row = {"name": name, "budget": budget, "disk_bps": disk, "error": run["error"], "reads": "mmap" if
                   "llama" in name else "cached", "read_bytes": read_bytes,
                   "peak": (run["cgroup"] or {}).get("max_usage")}
            if run["stats"]:
                row["sweep_s"] = run["stats"]["decode_sweep_s"]
            rows.append(row)

        for index, budget in enumerate(budgets):
            say()
            say("budget %s" % fmt_size(budget))
            prediction = plan_prediction(layerwise, model, budget, context)
            ours("layerwise", budget, ["--io", "direct"], prediction["sweep_s"])
            if index:
                continue
            ours("layerwise --no-prefetch", budget, ["--io", "direct", "--no-prefetch"])
            if not no_cgroup:
                ours("layerwise --io auto, cgroup", budget, ["--io", "auto"], prediction["sweep_s"], limited=True)
            if llama_bench:
                others("llama.cpp mmap, cgroup", budget,
                        [llama_bench, "-m", gguf_path, "-p", "0", "-n", str(args.decode - 1), "-r", "1", "--no-warmup",
                         "-t", str(args.threads), "-lm", "mmap", "--repack", "0", "-o", "json"], parse_llama_bench(args.decode - 1),
                       [gguf_path], os.path.getsize(gguf_path))
            if args.airllm_python:
                # AirLLM loads a tokenizer it does not use here (ids in, ids out): stories260K's will do.
                created.append(airllm_dir)
                model_view = os.path.join(airllm_dir, "model")
                os.makedirs(model_view)
                for name in os.listdir(hf_dir):
                    os.symlink(os.path.join(hf_dir, name), os.path.join(model_view, name))
                for name in ("tokenizer.json", "tokenizer_config.json"):
                    shutil.copy(os.path.join(ROOT, "models", "stories260K", name), model_view)
                others("AirLLM, cgroup", budget,
                        [args.airllm_python, os.path.join(ROOT, "bench", "airllm_run.py"), "--model", model_view,
                         "--shards", os.path.join(airllm_dir, "shards"), "--prompt-ids", prompt_text, "--max-new-tokens", str(args.decode),
                         "--threads", str(args.threads)], parse_airllm, [weights], model_bytes)
        outputs = {tuple(r["output"]) for r in rows if r.get("output")}
        for r in rows:
            if r["name"] == "layerwise --no-prefetch" and r.get("sweep_s"):
                r["note"] = "read-ahead makes decode %s faster" % fmt_ratio(r["sweep_s"] / rows[0]["sweep_s"])
        report(rows, args)
        say("  generated tokens: %s" % ("identical in every layerwise run" if len(outputs) == 1 else
                                        "DIFFER between layerwise runs"))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
        return 0 if all(not r.get("error") for r in rows) and len(outputs) <= 1 else 1
    finally:
        if args.keep:
            say("\nkept %s" % workdir)
        else:
            for path in reversed(created):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else \
                    (os.path.exists(path) and os.remove(path))
            if created_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            say("\nremoved %s" % (workdir if created_workdir else ", ".join(created) or "nothing"))


LLAMA_BUILD_SCRIPT = os.path.join(ROOT, "bench", "build_llama_cpp.sh")


def engine_tools(build_dir):
    """build_dir's layerwise and make_checkpoint, or a BenchError saying how to build them."""
    tools = [os.path.join(build_dir, name) for name in ("layerwise", "make_checkpoint")]
    for tool in tools:
        if not os.access(tool, os.X_OK):
            raise BenchError("%s not found; build first: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && "
                             "cmake --build build -j2 (or pass --build-dir)" % tool)
    return tools


def find_llama_cpp(llama_bin, tool):
    """The folder holding llama.cpp's `tool`: llama_bin (--llama-bin) when given, else
    bench/build_llama_cpp.sh's (built on first use). Returns (folder, build info)."""
    if llama_bin:
        bin_dir = os.path.abspath(llama_bin)
    else:
        say("  llama.cpp     bash bench/build_llama_cpp.sh (builds it on first use, about 5 minutes on 2 cores)")
        start = time.monotonic()
        built = subprocess.run(["bash", LLAMA_BUILD_SCRIPT], stdout=subprocess.PIPE, universal_newlines=True)
        if built.returncode != 0 or not built.stdout.strip():
            raise BenchError("bench/build_llama_cpp.sh failed (exit status %d); --no-llama skips llama.cpp" %
                             built.returncode)
        bin_dir = built.stdout.strip().splitlines()[-1]
        if time.monotonic() - start > 5:
            say("                built in %.0f s" % (time.monotonic() - start))
    path = os.path.join(bin_dir, tool)
    if not os.access(path, os.X_OK):
        raise BenchError("%s not found (--llama-bin names the folder holding %s)" % (path, tool))
    try:
        with open(os.path.join(bin_dir, "BUILD-INFO")) as f:
            info = f.read().strip()
    except OSError:
        info = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True).stdout.strip()
    say("  llama.cpp     %s: %s" % (bin_dir, info.replace("\n", "; ")))
    return bin_dir, info


def run_main(main_function, name):
    """Runs a benchmark's main: exit status 1 with its error message, 130 on Ctrl-C or `kill`
    (which then clean up as Ctrl-C does)."""
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        sys.exit(main_function())
    except BenchError as e:
        print("%s: error: %s" % (name, e), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("%s: interrupted" % name, file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_main(main, "stream_bench")
