"""fwp-rl bench cores on tiny sizes: every row is timed and its peak memory measured, the title names the rate of
episode starts, a run out of GPU memory is skipped and the bench goes on; sizes it cannot run (and a bad --updates of
bench ppo) stop with one line naming them."""

import pytest
import torch

from fwp_rl.bench import cores
from fwp_rl.bench.cores import bench_cores, print_core_table
from fwp_rl.cli import main

# delta is timed in its step loop too, lstm is not
SIZES = dict(seq_lens=(8,), batch=2, width=8, heads=2, repeats=1, cores=["delta", "lstm"])


def test_bench_cores_times_every_core_and_the_chunkwise_loop():
    rows = bench_cores(**SIZES)
    assert [r["core"] for r in rows] == ["nn.LSTM", "delta", "lstm"]
    assert all(r["ms"] > 0 and r["vs_lstm"] > 0 and r["skipped"] is None and r["peak_mib"] >= 0 for r in rows)
    assert rows[1]["vs_loop"] > 0 and rows[2]["vs_loop"] is None
    assert [r["form"] for r in rows] == [None, None, None]  # the fla and Triton routes are named on CUDA only


def test_the_title_names_the_form_of_each_delta_core_and_of_rdn_on_cuda(monkeypatch, capsys):
    def bench_cores(*args):
        return [dict(core=core, T=8, ms=1.0, vs_lstm=1.0, vs_loop=None, skipped=None, loop_skipped=None, form=form,
                     peak_mib=1.0)
                for core, form in [("nn.LSTM", None), ("delta", "the fla kernels (fla-core 0.6.0; ...)"),
                                   ("gated_delta", "the PyTorch chunkwise form (FWP_RL_FLA=0)"),
                                   ("rdn", "the Triton kernels (Triton 3.9.0)"), ("srwm", None)]]

    monkeypatch.setattr(cores, "bench_cores", bench_cores)
    monkeypatch.setattr(cores, "machine_description", lambda device: "a GPU")
    assert main(["bench", "cores", "--device", "cpu", "--reset-rate", "0.005"]) == 0
    title = " ".join(capsys.readouterr().out.split())  # rich wraps the title to the table's width
    assert "episode starts at 0.5% of the cores' steps (nn.LSTM: none)" in title
    assert ("a GPU; delta: the fla kernels (fla-core 0.6.0; ...); gated_delta: the PyTorch "
            "chunkwise form (FWP_RL_FLA=0); rdn: the Triton kernels (Triton 3.9.0)") in title


def test_peak_memory_is_what_a_run_added_to_the_peak():
    def allocate(size):
        return lambda: torch.ones(size // 4, dtype=torch.float32).sum()  # written, so resident

    small, large = (cores.peak_memory(allocate(n), torch.device("cpu")) for n in (2**20, 256 * 2**20))
    assert 250 * 2**20 <= large < 300 * 2**20 and small < 16 * 2**20

    def many_small():  # 64 MiB in 4 KiB tensors: the C allocator's heap, which keeps them resident when freed
        return [torch.ones(1024) for _ in range(16 * 1024)]

    many_small()
    assert cores.peak_memory(many_small, torch.device("cpu")) >= 48 * 2**20  # not hidden in the freed heap


def test_a_run_out_of_gpu_memory_is_skipped_and_the_bench_goes_on(monkeypatch):
    timed = []

    def median_time(fn, repeats, device):  # the lstm run fails to allocate
        timed.append(fn)
        if len(timed) == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return 0.01

    monkeypatch.setattr(cores, "median_time", median_time)
    rows = bench_cores(**SIZES)
    assert len(timed) == 4  # nn.LSTM, delta, delta's loop, lstm
    assert [r["skipped"] for r in rows[:2]] == [None, None] and rows[1]["vs_loop"] == 1.0
    assert rows[2]["ms"] is None and rows[2]["skipped"] == "out of GPU memory" and rows[2]["peak_mib"] is None


def test_core_table_shows_a_skipped_step_loop(capsys):
    row = dict(core="delta", T=512, ms=250.0, vs_lstm=0.5, vs_loop=None, skipped=None,
               loop_skipped="out of GPU memory", peak_mib=1234.4)
    print_core_table([row], "one row")
    out = capsys.readouterr().out
    assert "250.0" in out and "1,234" in out and "loop skipped" in out


@pytest.mark.parametrize("arguments, message", [
    (["cores", "--repeats", "0"], "--repeats 0 is not allowed: it must be >= 1"),
    (["cores", "--device", "gpu"], "--device gpu is not allowed: 'cpu', 'cuda', 'cuda:1', ..."),
    (["cores", "--batch", "-1"], "--batch -1 is not allowed: it must be >= 1"),
    (["cores", "--reset-rate", "1.5"], "--reset-rate 1.5 is not allowed: it must be between 0 and 1"),
    (["cores", "--width", "10", "--heads", "4"], "--width 10 is not allowed with --heads 4: the heads split the "
                                                 "width, so it must be a multiple of 4"),
    (["ppo", "--updates", "0"], "--updates 0 is not allowed: it must be >= 1"),
    (["ppo", "--num-envs", "0"], "--num-envs 0 is not allowed: it must be >= 1"),
])
def test_bad_bench_input_is_one_line_naming_it_and_what_is_allowed(capsys, arguments, message):
    assert main(["bench", *arguments]) == 2
    assert capsys.readouterr().err.strip() == f"fwp-rl: error: {message}"
