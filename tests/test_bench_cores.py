"""fwp-rl bench cores on tiny sizes: every row is timed, and a run whose memory estimate exceeds what is
available is skipped with the estimate in its row instead of running out of memory."""

from fwp_rl.bench import bench_cores, print_core_table

SIZES = dict(seq_lens=(8,), batch=2, width=8, heads=2, repeats=1, cores=["delta", "srwm"])


def test_bench_cores_times_every_core_and_the_chunkwise_loop():
    rows = bench_cores(**SIZES, memory=2**40)
    assert [r["core"] for r in rows] == ["nn.LSTM", "delta", "srwm"]
    assert all(r["ms"] > 0 and r["vs_lstm"] > 0 and r["skipped"] is None for r in rows)
    assert rows[1]["vs_loop"] > 0 and rows[2]["vs_loop"] is None


def test_bench_cores_skips_what_does_not_fit(capsys):
    rows = bench_cores(**SIZES, memory=1)
    assert all(r["ms"] is None and r["vs_lstm"] is None and r["skipped"].startswith("needs about ") for r in rows)
    print_core_table(rows, "tiny")
    assert capsys.readouterr().out.count("skipped: needs about") == 3


def test_core_table_shows_a_skipped_step_loop(capsys):
    row = dict(core="delta", T=512, ms=250.0, vs_lstm=0.5, vs_loop=None, skipped=None,
               loop_skipped="needs about 30.0 GiB")
    print_core_table([row], "one row")
    out = capsys.readouterr().out
    assert "250.0" in out and "loop skipped" in out
