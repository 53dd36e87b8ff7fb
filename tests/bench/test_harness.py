"""The benchmarks' shared harness: the environment, the device, a clean process per measurement, the report's markdown."""

from __future__ import annotations

import os

import pytest

from bench import BenchError
from bench.harness import (
    Environment,
    device_problem,
    human_bytes,
    in_forkserver,
    machine_facts,
    markdown_table,
    measure_environment,
    peak_resident_bytes,
    report_header,
    resident_bytes,
    resolve_device,
)


def test_the_environment_without_a_device_imports_no_torch():
    env = measure_environment(load=2.5)
    assert env.load == 2.5 and env.load_words == "2.5"
    assert env.cpu and env.cores == os.cpu_count() and env.python.count(".") == 2
    assert env.device is None and env.threads == 0 and "torch" not in env.versions
    assert set(env.versions) == {"MONAI", "MONAI Label"}
    assert set(machine_facts()) == {"date", "cores", "cpu", "os", "python", "monailabel", "load"}


def test_the_environment_on_the_cpu_names_torch_and_its_threads():
    import torch

    threads = torch.get_num_threads()
    try:
        env = measure_environment("cpu", threads=1)
        assert env.device == "cpu" and env.device_name == env.cpu and env.threads == 1
        assert env.versions["torch"] == torch.__version__
    finally:
        torch.set_num_threads(threads)


def test_devices_resolve_like_pick_device_and_bad_ones_are_named():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_problem("auto") is None
    with pytest.raises(BenchError, match=r"--device must be one of auto, cpu, cuda, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="--device cuda asked for, but torch sees no CUDA device"):
            resolve_device("cuda")


def test_memory_of_this_process():
    assert 0 < resident_bytes() <= peak_resident_bytes()


def square(x: int) -> int:
    return x * x


def die(code: int) -> None:
    os._exit(code)


def refuse(message: str) -> None:
    raise BenchError(message)


def pid() -> int:
    return os.getpid()


def test_in_forkserver_returns_the_result_of_a_new_process_each_time():
    assert in_forkserver(square, 7, preload=[], what="squaring", hint="none") == 49
    pids = {in_forkserver(pid, preload=[], what="pid", hint="none") for _ in range(2)}
    assert len(pids) == 2 and os.getpid() not in pids
    with pytest.raises(BenchError, match="no such thing"):
        in_forkserver(refuse, "no such thing", preload=[], what="refusing", hint="none")
    with pytest.raises(BenchError, match=r"the process dying died \(killed for memory\? try less\)"):
        in_forkserver(die, 9, preload=[], what="dying", hint="try less")


def test_report_header_and_tables():
    env = Environment(date="2024-01-01 00:00 UTC", load=None, cpu="Some CPU", cores=2, os="Linux-x", python="3.11.9",
                      versions={"torch": "2.5", "MONAI": "1.4"}, device="cuda", device_name="Some GPU", threads=4)
    header = report_header("Title", "slpt bench x --y 1", env, ["Model: m", "Memory: n"], load_note="shared")
    assert header == (
        "# Title\n\n- Command: `slpt bench x --y 1`\n- Date: 2024-01-01 00:00 UTC\n"
        "- Machine: Some CPU, 2 CPU cores, Linux-x; 1-min load average at the start n/a (shared)\n"
        "- Device: cuda (Some GPU); 4 torch threads\n- Software: Python 3.11.9, torch 2.5, MONAI 1.4\n"
        "- Model: m\n- Memory: n\n"
    )
    assert markdown_table(["a", "b"], [["x", 1], ["y", 2.5]], "lr") == "| a | b |\n|---|---:|\n| x | 1 |\n| y | 2.5 |"
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [], "l")
    assert [human_bytes(n) for n in (5, 1536, 3 * 2**20, 2**31)] == ["5 B", "1.5 KiB", "3.0 MiB", "2.00 GiB"]
