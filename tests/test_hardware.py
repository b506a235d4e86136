"""The hardware a run trained on: named from the CPU's flags (or torch), recorded by every run, reported.

A run's figures depend on the CPU's kind (bfloat16 in hardware or not) and on torch's thread
count (the order of floating-point sums), and cloud VMs name their CPU only "Intel(R) Xeon(R)
Processor", so the description must carry the instruction-set level and the threads.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import torch

from ganbench.cli import main
from ganbench.training import hardware
from ganbench.training.hardware import TorchCpu, describe_cpu, device_description, parse_cpuinfo, resumed_hardware

XEON = "Intel(R) Xeon(R) Processor"
COMMON = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat clflush mmx fxsr sse sse2 ht syscall nx"
AVX2_ONLY = f"{COMMON} pni ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand bmi1 avx2 bmi2"
SAPPHIRE_RAPIDS = (f"{AVX2_ONLY} avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx_vnni avx512_bf16 "
                   "avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq amx_bf16 avx512_fp16 amx_tile "
                   "amx_int8")
SKYLAKE_SERVER = f"{AVX2_ONLY} avx512f avx512dq avx512cd avx512bw avx512vl"


def cpuinfo(flags: str, model: str = XEON, processors: int = 2) -> str:
    """A ``/proc/cpuinfo`` text as Linux writes it: one block per logical processor."""
    return "\n".join(f"processor\t: {index}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                     f"model name\t: {model}\nflags\t\t: {flags}\nbogomips\t: 4000.00\n"
                     for index in range(processors))


def torch_cpu(capability="AVX512", bf16=False, amx=False, threads=1) -> TorchCpu:
    return TorchCpu(capability=capability, bf16=bf16, amx=amx, threads=threads)


def test_an_avx2_only_cpu_is_named_avx2_without_native_bfloat16():
    text = describe_cpu(cpuinfo(AVX2_ONLY), torch_cpu("AVX2"))
    assert text == f"{XEON}, AVX2 (bf16 not native), 1 torch thread"


def test_a_sapphire_rapids_cpu_is_named_avx512_bf16_with_amx_and_native_bfloat16():
    text = describe_cpu(cpuinfo(SAPPHIRE_RAPIDS), torch_cpu("AVX512", bf16=True, amx=True, threads=2))
    assert text == f"{XEON}, AVX512-BF16 + AMX (bf16 native), 2 torch threads"


def test_avx512_without_bf16_is_told_apart_from_avx512_bf16():
    text = describe_cpu(cpuinfo(SKYLAKE_SERVER), torch_cpu("AVX512", threads=4))
    assert text == f"{XEON}, AVX512 (bf16 not native), 4 torch threads"


def test_torch_kernels_below_the_cpu_level_are_named():
    """``ATEN_CPU_CAPABILITY=avx2`` makes torch dispatch AVX2 kernels on an AVX512 CPU: the figures follow torch."""
    text = describe_cpu(cpuinfo(SAPPHIRE_RAPIDS), torch_cpu("AVX2", bf16=True, amx=True))
    assert text == f"{XEON}, AVX512-BF16 + AMX (bf16 native; torch kernels AVX2), 1 torch thread"


def test_without_proc_cpuinfo_the_kind_comes_from_torch():
    assert describe_cpu(None, torch_cpu("AVX512", bf16=True, amx=True, threads=2), "x86_64") == (
        "x86_64, AVX512-BF16 + AMX (bf16 native), 2 torch threads")
    assert describe_cpu(None, torch_cpu("AVX2"), "x86_64") == "x86_64, AVX2 (bf16 not native), 1 torch thread"
    assert describe_cpu("", torch_cpu("DEFAULT"), "") == "CPU, baseline ISA (bf16 not native), 1 torch thread"


def test_an_arm_cpu_is_named_from_its_features():
    text = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 sve bf16\n"
    assert describe_cpu(text, torch_cpu("SVE256"), "aarch64") == "aarch64, SVE + BF16 (bf16 native), 1 torch thread"


def test_only_the_first_processor_is_read():
    text = cpuinfo(AVX2_ONLY, processors=1) + "\n" + cpuinfo(SAPPHIRE_RAPIDS, model="other", processors=1)
    info = parse_cpuinfo(text)
    assert info.model == XEON and "avx2" in info.flags and "avx512f" not in info.flags


def test_device_description_reads_the_cpuinfo_file_and_torchs_threads(tmp_path, monkeypatch):
    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo(AVX2_ONLY, model="Test CPU"))
    monkeypatch.setattr(hardware, "CPUINFO", str(fake))
    threads = torch.get_num_threads()
    expected_threads = f"{threads} torch thread{'s' if threads != 1 else ''}"
    kernels = torch.backends.cpu.get_cpu_capability()  # this machine's torch, so named when above AVX2
    notes = "bf16 not native" + (f"; torch kernels {kernels}" if kernels in ("AVX512", "DEFAULT") else "")
    assert device_description(torch.device("cpu")) == f"Test CPU, AVX2 ({notes}), {expected_threads}"

    monkeypatch.setattr(hardware, "CPUINFO", str(tmp_path / "missing"))
    kind, native = TorchCpu.here().kind()
    assert device_description(torch.device("cpu")).endswith(
        f", {kind} (bf16 {'native' if native else 'not native'}), {expected_threads}")
    assert kind.startswith("baseline ISA" if kernels == "DEFAULT" else kernels)


def test_another_device_kind_is_named_with_the_machine_not_as_a_bare_device_string():
    from ganbench.report.runs import recorded_hardware

    description = device_description(torch.device("meta"))  # as mps or xpu would be
    assert description.startswith("meta on ") and recorded_hardware({"hardware": description}) == description


def test_a_resumed_run_keeps_where_it_trained_before():
    assert resumed_hardware(None, "B", 100) == "B"
    assert resumed_hardware("B", "B", 100) == "B"
    assert resumed_hardware("A", "B", 100) == "A; from step 100: B"
    assert resumed_hardware("A; from step 100: B", "B", 200) == "A; from step 100: B"
    assert resumed_hardware("A; from step 100: B", "A", 200) == "A; from step 100: B; from step 200: A"


def _run(*args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code


def test_a_run_records_its_hardware_and_the_report_names_it(tmp_path, monkeypatch, cache_dir, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "20",
                "--metrics", "modes", "--workers", "1", "--out", "out", "--quiet") == 0
    reported = capsys.readouterr().out.splitlines()  # a run ends with the report of its output directory
    with open(tmp_path / "out" / "results.csv") as handle:
        [row] = list(csv.DictReader(handle))
    recorded = row["protocol.training_hardware"]
    here = device_description(torch.device("cpu")).rpartition(", ")[0]
    assert recorded.rpartition(", ")[0] == here  # the worker sets its own number of threads
    assert re.search(r", [1-9]\d* torch threads?$", recorded)
    assert row["protocol.training_torch"] == torch.__version__
    status_file = tmp_path / "out" / "runs" / row["run_id"] / "status.json"
    assert json.loads(status_file.read_text())["hardware"] == recorded

    assert f"hardware: {recorded} (1 run) (recorded by the runs)" in reported

    # A run written before runs recorded their hardware: the report names this machine and says so.
    shutil.copytree(tmp_path / "out" / "runs", tmp_path / "old" / "runs")
    old_status = tmp_path / "old" / "runs" / row["run_id"] / "status.json"
    status = json.loads(old_status.read_text())
    del status["hardware"]
    status["protocol"] = {k: v for k, v in status["protocol"].items() if k != "training_hardware"}
    old_status.write_text(json.dumps(status))
    capsys.readouterr()
    assert _run("report", "old", "-o", "old_report") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("hardware:"))
    assert line == (f"hardware: {device_description(torch.device('cpu'))} "
                    f"(the machine that wrote this report; the runs recorded none)")

    # Resumed on other hardware: the run keeps both, so its throughput is not taken for the new machine's.
    status_file.write_text(json.dumps({**json.loads(status_file.read_text()), "status": "interrupted",
                                       "hardware": "Older CPU, AVX2 (bf16 not native), 1 torch thread"}))
    assert _run("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "20",
                "--metrics", "modes", "--workers", "1", "--out", "out", "--quiet") == 0
    resumed = f"Older CPU, AVX2 (bf16 not native), 1 torch thread; from step 20: {recorded}"
    assert json.loads(status_file.read_text())["hardware"] == resumed
    with open(tmp_path / "out" / "results.csv") as handle:
        assert [row["protocol.training_hardware"] for row in csv.DictReader(handle)] == [resumed]
