"""Data-parallel PPO (fwp_rl.distributed), on gloo and the CPU: two ranks take the step one process takes on the same
envs and minibatches; `train --nproc 2` writes one run with the figures of both ranks and resumes; a rank that
fails stops the run, named, and the last checkpoint goes on; each bad input is one line naming the value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

from fwp_rl import distributed
from fwp_rl.agents import ppo
from fwp_rl.cli import main
from fwp_rl.config import dump_yaml, from_dict
from fwp_rl.runs import load_checkpoint, read_metrics
from fwp_rl.workers import available_cpus

from conftest import fwp_rl_process, terminated, wait_while_running

TESTS = Path(__file__).resolve().parent
DOUBLE_POLE = str(TESTS.parent / "configs" / "double_pole" / "nonmarkov_delta_error_cmaes.yaml")


def recall_config(root, env_id="fwp_rl/Recall-v0", options=None, **ppo_fields) -> ppo.PPOConfig:
    """A tiny float64 PPO run on 4 Recall envs (episodes of 4 steps), 96 agent steps an update, 8 sequences of 12
    steps in 4 minibatches of 2, observations normalized."""
    hp = dict(total_steps=192, num_steps=24, sequence_length=12, num_minibatches=4, update_epochs=2, device="cpu")
    hp.update(ppo_fields)
    return from_dict(ppo.PPOConfig, dict(
        name="recall", seed=3, env=dict(id=env_id, num_envs=4, options=dict(k=3, delay=2, **(options or {}))),
        policy=dict(torso="mlp", core="delta", core_options=dict(hidden_size=8), dtype="float64",
                    normalize_observations=True),
        ppo=hp, run=dict(root=str(root), wandb="disabled", checkpoint_every=1)))


def one_update_as_rank(rank: int, port: int, config: ppo.PPOConfig, out: Path) -> None:
    """Rank ``rank`` of 2: one update; saves its rollout, episodes, figures and policy to out/rank<rank>.pt."""
    os.environ.update(distributed.torchrun_environment(rank, 2, port))
    torch.set_num_threads(1)
    with distributed.joined() as ranks:
        trainer = ppo.Trainer(config, ranks)
        collect, kept = trainer.collect, []
        trainer.collect = lambda: kept.append(collect()) or kept[-1]
        figures = trainer.update()
        trainer.close()
    rollout, episodes, _ = kept[0]
    torch.save({"rollout": vars(rollout), "episodes": [tuple(map(float, e)) for e in episodes], "figures": figures,
                "policy": trainer.policy.state_dict()}, out / f"rank{rank}.pt")
    # Its work saved, the rank leaves without the interpreter's teardown, where torch's gloo and store threads abort
    # the process now and then ("terminate called without an active exception", SIGABRT; seen in about one exit in
    # five on a busy 2-core CPU, the files written). `--nproc`'s ranks report through a pipe before they exit, so
    # their exit status does not matter there.
    os._exit(0)


def test_two_ranks_take_the_step_of_one_process_on_the_same_envs_and_minibatches(tmp_path):
    config = recall_config(tmp_path)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    torch.multiprocessing.start_processes(one_update_as_rank, args=(store.port, config, tmp_path), nprocs=2,
                                          start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    # One process with all 4 envs: the same envs, seeded alike (each rank held 2 of them) ...
    one = ppo.Trainer(config)
    torch.testing.assert_close(torch.cat([r["rollout"]["obs"][0] for r in ranks]), one.obs, rtol=0, atol=0)
    # ... learning from both ranks' rollouts side by side, with the minibatch order of the same generator
    parts = [ppo.Rollout(**r["rollout"]) for r in ranks]
    both = ppo.Rollout(*(torch.cat(fields, dim=1) for fields in zip(
        *[(p.obs, p.actions, p.log_probs, p.values, p.rewards, p.starts) for p in parts])),
        sequence_states=tuple(torch.cat(s, dim=1) for s in zip(*[p.sequence_states for p in parts])),
        next_value=torch.cat([p.next_value for p in parts]), next_start=torch.cat([p.next_start for p in parts]))
    generator = torch.Generator().manual_seed(config.seed)
    orders = [torch.randperm(8, generator=generator) for _ in range(2)]
    sides = [(order.view(4, 2) % 4 // 2) for order in orders]  # the rank of each sequence of each minibatch
    assert any(bool((side == side[:, :1]).all(1).any()) for side in sides), \
        "some minibatch must lie at one rank alone, so that the other adds nothing"
    figures = ppo.ppo_update(one.policy, one.optimizer, both, config.ppo, one.generator)
    one.policy.update_observation_statistics(both.obs)
    one.close()

    for r in ranks:  # every rank holds what the one process holds: parameters and normalizer statistics
        for name, value in one.policy.state_dict().items():
            torch.testing.assert_close(r["policy"][name], value, rtol=1e-9, atol=1e-12, msg=name)
        for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance"):
            assert r["figures"][name] == pytest.approx(figures[name], rel=1e-9, abs=1e-12), name
        episodes = ranks[0]["episodes"] + ranks[1]["episodes"]
        assert r["figures"]["episodes"] == len(episodes) == 24  # 4 envs x 24 steps / 4-step episodes
        assert r["figures"]["episodic_return"] == pytest.approx(sum(e[0] for e in episodes) / len(episodes))
    for name, value in ranks[0]["policy"].items():
        assert torch.equal(ranks[1]["policy"][name], value), name


def write_config(root, **kwargs) -> Path:
    path = root / "recall.yaml"
    dump_yaml(recall_config(root, **kwargs), path)
    return path


def last_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in lines[-1], err
    return lines[-1]


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_rank_that_fails_stops_the_run_named_and_the_run_resumes_from_its_last_checkpoint(tmp_path, capfd, how):
    """Rank 1's env seeded 5 (rank 1 steps envs 2 and 3: seeds 5 and 6) breaks at its 30th step, in update 2: the run
    stops, naming rank 1, the checkpoint of update 1 is whole, and --resume --nproc 2 trains the run to its end."""
    once = tmp_path / "failed_once"
    config = write_config(tmp_path, env_id="failing_envs:failing/Recall-v0", total_steps=288,
                          options=dict(seed=5, step=30, how=how, once=str(once)))
    assert main(["train", str(config), "--nproc", "2"]) == 1
    err = capfd.readouterr().err
    expected = {"raise": "rank 1 of 2 failed: RuntimeError: env seeded 5 broke at its step 30",
                "kill": "rank 1 of 2 was killed by SIGKILL before it finished"}[how]
    assert last_line(err) == f"fwp-rl: error: {expected}; every rank stopped, and the run keeps its last checkpoint " \
                             "(--resume RUN_DIR goes on from it)"
    assert once.exists()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # rank 1 wrote none
    assert load_checkpoint(run_dir)["update"] == 1
    assert [r["update"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1]
    if how == "kill":
        return

    assert main(["train", "--resume", str(run_dir), "--nproc", "2"]) == 0
    capfd.readouterr()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [96, 192, 288]  # steps of both ranks
    assert all(r["episodes"] == 24 for r in records)  # episodes of both ranks: 4 envs x 24 steps / 4 steps
    assert load_checkpoint(run_dir)["update"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [run_dir.name]


def test_sigterm_stops_every_rank_after_the_update_under_way_with_a_checkpoint(tmp_path):
    """SIGTERM to `fwp-rl train --nproc 2` reaches both ranks once: they stop after the same update, rank 0 saves it,
    and the exit status is 143."""
    config = write_config(tmp_path, total_steps=96 * 10_000)
    metrics = tmp_path / "recall" / "metrics.jsonl"
    with fwp_rl_process("train", str(config), "--nproc", "2") as child:
        wait_while_running(child, lambda: metrics.is_file() and metrics.read_text(), "the run logged no update")
        printed = terminated(child)
    assert printed.count("SIGTERM: stopping after this update") == 1 and "Traceback" not in printed, printed
    records = read_metrics(metrics)
    assert load_checkpoint(tmp_path / "recall")["update"] == records[-1]["update"] == len(records) < 10_000


@pytest.mark.parametrize("args, sets, message", [
    (["--nproc", "0"], [], "--nproc 0 is not allowed: it must be >= 1"),
    (["--nproc", str(available_cpus() + 1)], [],
     f"--nproc {available_cpus() + 1} is not allowed: training on the CPU takes a core per process and this process "
     f"may use {available_cpus()}"),
    (["--nproc", "2"], ["env.num_envs=3", "ppo.num_minibatches=3"],
     "env.num_envs=3 is not allowed with --nproc 2: it must be a multiple of 2, each process stepping num_envs / 2 of "
     "the envs"),
    (["--nproc", "2", "--seeds", "0,1"], [],
     "--nproc 2 trains one run in several processes and --seeds one run per seed: give one of them"),
    (["--nproc", "2"], ["ppo.device=cuda"], "ppo.device='cuda'"),
])
def test_bad_inputs_are_one_line_errors_naming_the_value(tmp_path, capsys, args, sets, message):
    config = write_config(tmp_path)
    assert main(["train", str(config), *args, *[item for s in sets for item in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fwp-rl: error: ") and err.count("\n") == 1 and message in err, err
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "nothing may be written"


def test_nproc_of_another_learner_is_one_line_naming_it(capsys):
    assert main(["train", DOUBLE_POLE, "--nproc", "2"]) == 2
    assert capsys.readouterr().err == ("fwp-rl: error: --nproc 2 is not allowed for a 'neuroevolution' run: only 'ppo' "
                                       "runs train in several processes\n")


@pytest.mark.parametrize("device, nccl, message", [
    ("cuda", False, "ppo.device='cuda' with --nproc 2 needs NCCL, which this build of torch lacks: install a CUDA "
                    "build of torch with NCCL, or train on 'cpu' (gloo)"),
    ("cuda:1", True, "ppo.device='cuda:1' is not allowed with --nproc 2: each process takes the GPU of its local rank; "
                     "use 'cuda' or 'auto'"),
])
def test_cuda_without_nccl_or_with_a_gpu_named_is_one_line(tmp_path, capsys, monkeypatch, device, nccl, message):
    """As a machine with GPUs would answer: its devices stood in for."""
    monkeypatch.setattr(distributed, "_device", lambda config: torch.device(config.ppo.device))
    monkeypatch.setattr(dist, "is_nccl_available", lambda: nccl)
    config = write_config(tmp_path, device=device)
    assert main(["train", str(config), "--nproc", "2"]) == 2
    assert capsys.readouterr().err == f"fwp-rl: error: {message}\n"


def test_under_torchrun_nproc_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(write_config(tmp_path)), "--nproc", "2"]) == 2
    assert "under torchrun, train takes CONFIG or --resume RUN_DIR" in capsys.readouterr().err


def test_python_m_fwp_rl_cli_is_the_command_torchrun_starts():
    out = subprocess.run([sys.executable, "-m", "fwp_rl.cli", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--nproc N" in out
