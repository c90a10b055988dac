#!/usr/bin/env python3
"""Streaming benchmark for layerwise: how fast does a model run resident, streamed with
read-ahead, and streamed without it, and how close does streaming get to what the machine's
memory and disk allow?

    python3 bench/stream_bench.py --shape tinyllama-1.1b --dtype f32 [--budget 2GiB]
        [--prefill 128] [--decode 32] [--keep] [--workdir DIR]

Steps: describe the machine; write a random-weight checkpoint (build/make_checkpoint) and split
it (layerwise split) in a scratch folder; measure read bandwidth (cold disk when the page cache
can be dropped, warm page cache) and memcpy bandwidth; run `layerwise generate` three ways
(resident, --max-memory BUDGET, --max-memory BUDGET --no-prefetch), each in a fresh process;
print a table and the ratios; delete the scratch files unless --keep. See bench/README.md.

Standard library only (Python 3.8+).
"""
import argparse
import json
import math
import mmap
import os
import platform
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
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
SAFETENSORS_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I32": 4, "I64": 8, "U8": 1, "I8": 1}
# Mirrors src/runtime/streamer.cpp: tensors of a unit closer than this are read in one pread.
ENGINE_MAX_GAP_TO_COALESCE = 4096
READ_CHUNK = 16 << 20  # probe reads: 16 MiB, as large as the engine's unit reads need to be to stream


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


def unit_read_bytes(path):
    """Bytes the engine reads to load this unit file: its tensors, merged into reads the way
    layout_unit() merges them (gaps of at most 4 KiB are read through)."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    total, current = 0, None
    for begin, end in spans:
        if current and begin >= current[0] and end <= current[1]:
            continue  # a tensor inside the last read (tied weights) is not read again
        if current and begin >= current[1] and begin - current[1] <= ENGINE_MAX_GAP_TO_COALESCE:
            current[1] = end
            continue
        if current:
            total += current[1] - current[0]
        current = [begin, end]
    if current:
        total += current[1] - current[0]
    return total


def read_split(split_dir):
    with open(os.path.join(split_dir, "manifest.json")) as f:
        manifest = json.load(f)
    units = []
    for unit in manifest["units"]:
        path = os.path.join(split_dir, unit["file"])
        units.append({"name": unit["name"], "path": path, "file_bytes": os.path.getsize(path),
                      "read_bytes": unit_read_bytes(path)})
    return manifest, units


# ----------------------------------------------------------------------------- hardware probes

def drop_page_cache():
    """Returns None on success, else why it could not be done."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as e:
        return "writing /proc/sys/vm/drop_caches failed: %s" % e


def anonymous_buffer(size):
    """Memory of its own mapping, returned to the system on close(): buffers from the heap would
    stay in this process's RSS, which every engine run's wait4 peak inherits (see run_engine)."""
    return mmap.mmap(-1, size)


def read_files(paths):
    """Reads the files once, in order, with 16 MiB reads into one buffer; returns (bytes, seconds)."""
    buffer = anonymous_buffer(READ_CHUNK)
    view = memoryview(buffer)
    total = 0
    start = time.perf_counter()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            with open(fd, "rb", buffering=0, closefd=False) as f:
                while True:
                    got = f.readinto(view)
                    if not got:
                        break
                    total += got
        finally:
            os.close(fd)
    seconds = time.perf_counter() - start
    view.release()
    buffer.close()
    return total, seconds


def memcpy_probe(available):
    """Single-thread user-space memcpy (memoryview slice assignment is one memcpy) of two buffers
    too large for the CPU caches; best of 5 after a warm-up that faults the pages in."""
    size = 256 << 20
    if available:
        size = max(16 << 20, min(size, available // 8))
    source, target = anonymous_buffer(size), anonymous_buffer(size)
    src, dst = memoryview(source), memoryview(target)
    src[:] = b"\x5a" * size  # fault the pages in, with data that is not all zero
    dst[:] = src  # fault the target's pages in
    best = None
    for _ in range(5):
        start = time.perf_counter()
        dst[:] = src
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    src.release()
    dst.release()
    source.close()
    target.close()
    return size, best


def probe_hardware(units, allow_drop, ram_available, fstype):
    paths = [u["path"] for u in units if u["name"] != "embed"]
    file_bytes = sum(os.path.getsize(p) for p in paths)
    say("probes (reading the %d layer/head files of the split, %s, one thread, %d MiB reads)" % (
        len(paths), fmt_size(file_bytes), READ_CHUNK >> 20))
    result = {"cold_bps": None, "cold_note": None, "warm_bps": None, "first_bps": None, "memcpy_bps": None}
    if fstype in ("tmpfs", "ramfs"):
        why = "the workdir is on %s: the files are in memory, there is no disk to read" % fstype
    else:
        why = drop_page_cache() if allow_drop else "--no-drop-caches given"
    if why is None:
        n, s = read_files(paths)
        result["cold_bps"] = n / s
        result["cold_note"] = "page cache dropped first (sync; echo 3 > /proc/sys/vm/drop_caches)"
        say("  cold read     %s in %.2f s = %s   [disk: page cache dropped first%s]" % (
            fmt_size(n), s, fmt_gbps(n / s),
            "; this is a VM, the host may still cache its virtual disk" if _virtualized() else ""))
    else:
        result["cold_note"] = "not measured: " + why
        n, s = read_files(paths)
        result["first_bps"] = n / s
        say("  cold read     not measured (%s)" % why)
        say("  first read    %s in %.2f s = %s   [page cache state unknown: the split was just written, "
            "so probably cached]" % (fmt_size(n), s, fmt_gbps(n / s)))
    n, s = read_files(paths)
    result["warm_bps"] = n / s
    cached_note = "" if not ram_available or file_bytes < 0.8 * ram_available else \
        "; WARNING: the files are near or over available memory, they may not all be cached"
    say("  warm read     %s in %.2f s = %s   [page cache -> process buffer, the path the engine's reads take "
        "when the model is cached%s]" % (fmt_size(n), s, fmt_gbps(n / s), cached_note))
    size, s = memcpy_probe(ram_available)
    result["memcpy_bps"] = size / s
    say("  memcpy        %s in %.1f ms = %s copied   [RAM bandwidth, 1 thread, user space; each byte is "
        "read once and written once]" % (fmt_size(size), s * 1e3, fmt_gbps(size / s)))
    return result


_VIRTUALIZED = None


def _virtualized():
    global _VIRTUALIZED
    if _VIRTUALIZED is None:
        _VIRTUALIZED = "hypervisor" in read_proc_kv("/proc/cpuinfo").get("flags", "").split()
    return _VIRTUALIZED


# ----------------------------------------------------------------------------- engine runs

STAT_PATTERNS = {
    "load": re.compile(r"^load\s+([0-9.]+) s$", re.M),
    "prefill": re.compile(r"^prefill\s+(\d+) tokens in ([0-9.]+) s \(([0-9.]+) tokens/s\)$", re.M),
    "decode": re.compile(r"^decode\s+(\d+) tokens in ([0-9.]+) s \(([0-9.]+) tokens/s\)$", re.M),
    "sweeps": re.compile(r"^sweeps\s+(\d+); layer loads (\d+); read ([0-9.]+ [KMGT]?i?B) in ([0-9.]+) s "
                         r"\(([0-9.]+) GB/s\); waited for reads ([0-9.]+) s \((\d+)% of reading hidden\)$", re.M),
    "memory": re.compile(r"^memory\s+budget ([0-9.]+ [KMGT]?i?B); plan ([0-9.]+ [KMGT]?i?B); "
                         r"peak RSS ([0-9.]+ [KMGT]?i?B)$", re.M),
}


def parse_stats(stderr):
    missing = [k for k, p in STAT_PATTERNS.items() if not p.search(stderr)]
    if missing:
        raise ValueError("statistics line(s) missing or in an unexpected format: " + ", ".join(missing))
    m = {k: p.search(stderr) for k, p in STAT_PATTERNS.items()}
    read_bytes, read_resolution = parse_engine_size(m["sweeps"].group(3))
    return {
        "load_s": float(m["load"].group(1)),
        "prefill_tokens": int(m["prefill"].group(1)),
        "prefill_s": float(m["prefill"].group(2)),
        "prefill_tps": float(m["prefill"].group(3)),
        "decode_tokens": int(m["decode"].group(1)),
        "decode_s": float(m["decode"].group(2)),
        "decode_tps": float(m["decode"].group(3)),
        "sweeps": int(m["sweeps"].group(1)),
        "unit_loads": int(m["sweeps"].group(2)),
        "read_bytes": read_bytes,
        "read_bytes_resolution": read_resolution,
        "read_s": float(m["sweeps"].group(4)),
        "read_gbps": float(m["sweeps"].group(5)),
        "wait_s": float(m["sweeps"].group(6)),
        "hidden_pct": int(m["sweeps"].group(7)),
        "budget": parse_engine_size(m["memory"].group(1))[0],
        "plan": parse_engine_size(m["memory"].group(2))[0],
        "engine_peak_rss": parse_engine_size(m["memory"].group(3))[0],
    }


def infer_streaming(stats, units):
    """What each sweep read, from the engine's exact load count: the plan keeps a prefix of the
    units (in sweep order) resident, loaded once, and reads the rest on every sweep; with
    read-ahead the reader may have loaded up to two units of a sweep that never came."""
    loadable = [u for u in units if u["name"] != "embed"]
    count, sweeps, loads = len(loadable), stats["sweeps"], stats["unit_loads"]
    if sweeps < 1:
        return None
    if sweeps == 1:
        resident = count if loads == count else None
    else:
        estimate = (sweeps * count - loads) / (sweeps - 1)  # = resident - extra/(sweeps-1)
        resident = min(count, max(0, math.ceil(estimate - 1e-9)))
    if resident is None:
        return None
    extra = loads - (resident + sweeps * (count - resident))
    streamed = loadable[resident:]
    per_sweep = sum(u["read_bytes"] for u in streamed)
    extra_bytes = sum(u["read_bytes"] for u in streamed[:max(0, extra)]) if streamed else 0
    predicted = sum(u["read_bytes"] for u in loadable[:resident]) + sweeps * per_sweep + extra_bytes
    tolerance = stats["read_bytes_resolution"] + 1
    consistent = 0 <= extra <= 2 and abs(predicted - stats["read_bytes"]) <= tolerance
    return {"resident_units": resident, "units": count, "streamed_per_sweep": per_sweep,
            "read_ahead_unused": extra, "predicted_read_bytes": predicted, "consistent": consistent}


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


def run_engine(name, command):
    """Runs one generate in a fresh process; its own peak RSS comes from wait4() on its pid (it
    cannot read below this script's own peak RSS at the time of the spawn, kept as the floor)."""
    say("  %s\n    $ %s" % (name, " ".join(c if " " not in c else "'%s'" % (c[:40] + " ...") for c in command)))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0
        floor = reset_own_peak_rss() or 0
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall = time.monotonic() - start
        process.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else \
            (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    run = {"mode": name, "command": command, "exit": process.returncode, "wall_s": wall,
           "cpu_s": usage.ru_utime + usage.ru_stime, "wait4_peak_rss": usage.ru_maxrss * 1024,
           "wait4_floor": floor, "stdout": stdout, "stderr": stderr, "load_before": load_before, "error": None, "stats": None}
    if process.returncode != 0:
        run["error"] = "exit status %d" % process.returncode
    else:
        try:
            run["stats"] = parse_stats(stderr)
        except ValueError as e:
            run["error"] = str(e)
    if run["error"]:
        say("    FAILED: %s\n    stdout (tail):\n%s\n    stderr (tail):\n%s" % (
            run["error"], indent(stdout[-3000:]), indent(stderr[-3000:])))
    else:
        say(indent(stderr.rstrip(), "    | "))
        say("    wall %.2f s, CPU %.2f s (%.1f cores busy on average), peak RSS by wait4 %s (cannot read below %s, "
            "this script's own peak at the spawn); load average before %.2f" % (
                wall, run["cpu_s"], run["cpu_s"] / wall if wall > 0 else 0, fmt_size(run["wait4_peak_rss"]),
                fmt_size(floor), load_before))
    return run


def indent(text, prefix="      "):
    return "\n".join(prefix + line for line in text.splitlines())


# ----------------------------------------------------------------------------- report

def peak_rss(run):
    """The engine's own VmHWM, or wait4's figure when that is higher and above its floor."""
    if run["wait4_peak_rss"] > run["wait4_floor"] + (1 << 20):
        return max(run["stats"]["engine_peak_rss"], run["wait4_peak_rss"])
    return run["stats"]["engine_peak_rss"]


def median_run(runs):
    """The run with the median decode speed (the lower middle for an even count); failures first."""
    failed = [r for r in runs if not r["stats"]]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["stats"]["decode_tps"])
    return ordered[(len(ordered) - 1) // 2]


def report(runs, probes, all_runs):
    say()
    say("results" + ("" if len(all_runs) == len(runs) else
                     " (per mode, the round with the median decode tok/s of %d)" % (len(all_runs) // len(runs))))
    headers = ["mode", "prefill tok/s", "decode tok/s", "decode s/sweep", "read/sweep", "resident units",
               "read GB/s", "hidden", "cores busy", "peak RSS (engine / wait4)", "budget", "RSS/budget"]
    rows = []
    for run in runs:
        s, inf = run["stats"], run.get("inferred")
        if not s:
            rows.append([run["mode"], "FAILED: " + run["error"][:60]] + [""] * (len(headers) - 2))
            continue
        sweep = s["decode_s"] / s["decode_tokens"] if s["decode_tokens"] else None
        streamed = inf["streamed_per_sweep"] if inf else None
        rows.append([
            run["mode"],
            "%.1f" % s["prefill_tps"],
            "%.2f" % s["decode_tps"],
            fmt_seconds(sweep),
            fmt_size(streamed) + ("" if not inf or inf["consistent"] else " (?)"),
            "%d of %d" % (inf["resident_units"], inf["units"]) if inf else "?",
            "%.2f" % s["read_gbps"],
            "%d%%" % s["hidden_pct"],
            "%.1f" % (run["cpu_s"] / run["wall_s"]) if run["wall_s"] > 0 else "n/a",
            "%s / %s%s" % (fmt_size(s["engine_peak_rss"]), fmt_size(run["wait4_peak_rss"]),
                           " (floor)" if run["wait4_peak_rss"] <= run["wait4_floor"] + (1 << 20) else ""),
            fmt_size(s["budget"]) + (" (default)" if "--max-memory" not in run["command"] else ""),
            "%.0f%%" % (100.0 * peak_rss(run) / s["budget"]) if s["budget"] else "n/a",
        ])
    print_table(headers, rows)
    for run in runs:
        inf = run.get("inferred")
        if run["stats"] and inf and not inf["consistent"]:
            say("  (?) %s: the engine's counters do not fit a plan of resident prefix + streamed rest: %d loads, "
                "%s read, %d sweeps; best fit %d resident units predicts %s with %d unused read-ahead loads" % (
                    run["mode"], run["stats"]["unit_loads"], fmt_size(run["stats"]["read_bytes"]),
                    run["stats"]["sweeps"], inf["resident_units"], fmt_size(inf["predicted_read_bytes"]),
                    inf["read_ahead_unused"]))
        if run["stats"] and peak_rss(run) > run["stats"]["budget"]:
            say("  !! %s: peak RSS %s is over the budget %s" % (
                run["mode"], fmt_size(peak_rss(run)), fmt_size(run["stats"]["budget"])))
        if run["stats"] and run["wait4_peak_rss"] > run["wait4_floor"] + (1 << 20) and \
                abs(run["stats"]["engine_peak_rss"] - run["wait4_peak_rss"]) > max(8 << 20, 0.05 * run["wait4_peak_rss"]):
            say("  !! %s: the engine's peak RSS (%s) and wait4's (%s) disagree by more than 5%%" % (
                run["mode"], fmt_size(run["stats"]["engine_peak_rss"]), fmt_size(run["wait4_peak_rss"])))

    if len(all_runs) > len(runs):
        for run in runs:
            speeds = sorted(r["stats"]["decode_tps"] for r in all_runs if r["mode"] == run["mode"] and r["stats"])
            prefills = sorted(r["stats"]["prefill_tps"] for r in all_runs if r["mode"] == run["mode"] and r["stats"])
            if speeds:
                say("  %s: decode tok/s over %d rounds %s; prefill tok/s %s" % (
                    run["mode"], len(speeds), " ".join("%.2f" % v for v in speeds),
                    " ".join("%.1f" % v for v in prefills)))
    by_mode = {r["mode"]: r for r in runs if r["stats"]}
    resident = by_mode.get("resident")
    compute = resident["stats"]["decode_s"] / resident["stats"]["decode_tokens"] \
        if resident and resident["stats"]["decode_tokens"] else None
    say()
    say("ratios (decode; a sweep is one pass over all layers, one per generated token)")
    bandwidths = [("warm page cache", probes["warm_bps"])]
    if probes["cold_bps"]:
        bandwidths.append(("cold disk", probes["cold_bps"]))
    elif probes["first_bps"]:
        bandwidths.append(("first read (cache state unknown)", probes["first_bps"]))
    for mode in ("budget", "budget, no prefetch"):
        run = by_mode.get(mode)
        if not run or not run.get("inferred") or not run["stats"]["decode_tokens"]:
            continue
        s, streamed = run["stats"], run["inferred"]["streamed_per_sweep"]
        sweep = s["decode_s"] / s["decode_tokens"]
        say("  %s: decode sweep %s, streams %s per sweep" % (mode, fmt_seconds(sweep), fmt_size(streamed)))
        for label, bps in bandwidths:
            floor = streamed / bps if bps else None
            say("    vs read time at %s %s: %s -> sweep is %s the read time" % (
                label, fmt_gbps(bps), fmt_seconds(floor), fmt_ratio(sweep / floor) if floor else "n/a"))
        if s["read_bytes"] and s["read_s"]:
            engine_io = streamed / (s["read_bytes"] / s["read_s"])
            say("    vs read time at the engine's own read rate %s: %s -> %s" % (
                fmt_gbps(s["read_bytes"] / s["read_s"]), fmt_seconds(engine_io), fmt_ratio(sweep / engine_io)))
        if compute and probes["warm_bps"]:
            io = streamed / probes["warm_bps"]
            say("    vs resident decode sweep (compute only) %s: %s; ideal overlap max(compute, read) = %s, "
                "serial compute + read = %s" % (fmt_seconds(compute), fmt_ratio(sweep / compute),
                                                fmt_seconds(max(compute, io)), fmt_seconds(compute + io)))
    pre, nopre = by_mode.get("budget"), by_mode.get("budget, no prefetch")
    if pre and nopre:
        a, b = pre["stats"], nopre["stats"]
        say("  prefetch vs no prefetch (speedup = tok/s with / without): decode %s (%.2f vs %.2f tok/s), "
            "prefill %s (%.1f vs %.1f tok/s)" % (
            fmt_ratio(a["decode_tps"] / b["decode_tps"]) if b["decode_tps"] else "n/a", a["decode_tps"], b["decode_tps"],
            fmt_ratio(a["prefill_tps"] / b["prefill_tps"]) if b["prefill_tps"] else "n/a", a["prefill_tps"],
            b["prefill_tps"]))
    outputs = [(r["mode"], r["round"], r["stdout"].split()) for r in all_runs if r["stats"]]
    if len(outputs) > 1:
        reference = outputs[0]
        differ = sorted({"%s (round %d)" % (m, n) if len(all_runs) > len(runs) else m
                         for m, n, o in outputs if o != reference[2]})
        say("  generated tokens: %s" % ("identical in all runs" if not differ else
                                        "DIFFER from %s in: %s" % (reference[0], ", ".join(differ))))


# ----------------------------------------------------------------------------- main

def main():
    shapes = known_shapes()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Column meanings: bench/README.md")
    parser.add_argument("--shape", required=True, choices=sorted(shapes), help="checkpoint shape (make_checkpoint)")
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"], help="checkpoint dtype (default f32)")
    parser.add_argument("--budget", default="2GiB", type=parse_size, help="--max-memory of the streamed runs (default 2GiB)")
    parser.add_argument("--prefill", default=128, type=int, help="prompt tokens (default 128)")
    parser.add_argument("--decode", default=32, type=int, help="--max-new-tokens (default 32)")
    parser.add_argument("--threads", type=int, help="--threads for the engine (default: the engine's, all cores)")
    parser.add_argument("--repeat", default=1, type=int,
                        help="run the three modes this many times, interleaved, and report the median (default 1)")
    parser.add_argument("--seed", default=1, type=int, help="seed of the random prompt (default 1)")
    parser.add_argument("--workdir", help="scratch folder (default: a new folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and split afterwards")
    parser.add_argument("--no-drop-caches", action="store_true", help="never drop the page cache, even as root")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"), help="where layerwise and make_checkpoint are")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.prefill < 1 or args.decode < 2:
        parser.error("--prefill must be at least 1 and --decode at least 2 (the first token comes from prefill)")

    layerwise, make_checkpoint = engine_tools(args.build_dir)

    workdir, created_workdir = make_workdir(args.workdir, "layerwise-bench-")
    hf_dir, split_dir, bin_dir = (os.path.join(workdir, name) for name in ("hf", "split", "bin"))
    created = []
    results = {"args": vars(args), "runs": []}
    try:
        machine = describe_machine(workdir)
        results["machine"] = machine
        for path in (hf_dir, split_dir, bin_dir):
            if os.path.exists(path):
                raise BenchError("%s already exists; use an empty --workdir (nothing was deleted)" % path)
        # Every run uses one snapshot of the binaries, even if build/ is rebuilt meanwhile.
        created.append(bin_dir)
        os.makedirs(bin_dir)
        layerwise, make_checkpoint = (shutil.copy2(tool, os.path.join(bin_dir, os.path.basename(tool)))
                                      for tool in (layerwise, make_checkpoint))
        say("  engine        %s (%s, built %s; copied to %s for this run)" % (
            subprocess.run([layerwise, "--version"], stdout=subprocess.PIPE, universal_newlines=True).stdout.strip(),
            os.path.join(args.build_dir, "layerwise"),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(layerwise))), bin_dir))

        shape = shapes[args.shape]
        parameters, model_bytes = checkpoint_bytes(shape, args.dtype)
        needed = 2 * model_bytes
        say()
        say("checkpoint")
        say("  %s %s: %.1f M parameters, %s; the checkpoint and its split need %s, %s free in %s" % (
            args.shape, args.dtype, parameters / 1e6, fmt_size(model_bytes), fmt_size(needed),
            fmt_size(machine["disk_free"]), workdir))
        if machine["disk_free"] < needed:
            raise BenchError("not enough disk space in %s: %s free, %s needed (2 x the %s model: the checkpoint and "
                             "its split); free some space or pass --workdir on a bigger disk" % (
                                 workdir, fmt_size(machine["disk_free"]), fmt_size(needed), fmt_size(model_bytes)))
        created.append(hf_dir)
        seconds, _ = run_tool([make_checkpoint, "--shape", args.shape, "--dtype", args.dtype, "--out", hf_dir, "--quiet"],
                              "make_checkpoint")
        say("    wrote %s in %.1f s" % (fmt_size(os.path.getsize(os.path.join(hf_dir, "model.safetensors"))), seconds))
        created.append(split_dir)
        seconds, _ = run_tool([layerwise, "split", "--model", hf_dir, "--out", split_dir, "--quiet"], "layerwise split")
        manifest, units = read_split(split_dir)
        split_bytes = sum(u["file_bytes"] for u in units)
        say("    split into %d unit files, %s, in %.1f s" % (len(units), fmt_size(split_bytes), seconds))
        vocab = int(manifest["config"]["vocab_size"])

        say()
        probes = probe_hardware(units, not args.no_drop_caches, meminfo_bytes("MemAvailable"), machine["disk_fs"])
        results["probes"] = probes

        rng = random.Random(args.seed)
        prompt = " ".join(str(rng.randrange(3, vocab)) for _ in range(args.prefill))
        base = [layerwise, "generate", "--model", split_dir, "--prompt-ids", prompt,
                "--max-new-tokens", str(args.decode), "--ignore-eos"]
        if args.threads:
            base += ["--threads", str(args.threads)]
        budget = ["--max-memory", str(args.budget)]
        modes = [("resident", []), ("budget", budget), ("budget, no prefetch", budget + ["--no-prefetch"])]
        say()
        available = meminfo_bytes("MemAvailable") or 0
        cache_note = "the split fits in the page cache, so the runs read from memory" \
            if split_bytes < 0.8 * available else \
            "the split is near or over available memory, so the runs read partly from the disk"
        say("runs (%d random prompt ids in [3, %d), %d new tokens, greedy, --ignore-eos; budget %s; "
            "each in a fresh process; %s)" % (args.prefill, vocab, args.decode, fmt_size(args.budget), cache_note))
        all_runs = []
        for round_number in range(1, args.repeat + 1):
            for name, extra in modes:  # rounds interleave the modes, so a busy spell hits all of them
                if args.repeat > 1:
                    say("  round %d of %d" % (round_number, args.repeat))
                run = run_engine(name, base + extra)
                run["round"] = round_number
                if run["stats"]:
                    run["inferred"] = infer_streaming(run["stats"], units)
                    if run["stats"]["decode_tokens"] != args.decode - 1 or run["stats"]["prefill_tokens"] != args.prefill:
                        say("    !! expected %d prompt and %d decode tokens in the statistics" % (
                            args.prefill, args.decode - 1))
                all_runs.append(run)
        runs = [median_run([r for r in all_runs if r["mode"] == name]) for name, _ in modes]
        report(runs, probes, all_runs)
        results["runs"] = [{k: v for k, v in r.items() if k not in ("stdout",)} for r in all_runs]
        results["reported_rounds"] = {r["mode"]: r["round"] for r in runs}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
        return 0 if all(r["stats"] for r in all_runs) else 1
    finally:
        if args.keep:
            say("\nkept %s" % workdir)
        else:
            for path in reversed(created):
                shutil.rmtree(path, ignore_errors=True)
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
