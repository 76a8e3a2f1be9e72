"""Evaluation during training (run.eval_every, fwp_rl.harness.Run.evaluate) under every learner: when it happens, in
which env with which seeds, what it logs (metrics.jsonl and W&B alike), that it leaves training as it was, that
checkpoints/best.pt is the checkpoint of the best evaluation, also across resumes and a kill between latest.pt and its
copy; and ``fwp-rl evaluate --checkpoint``."""

import json

import pytest
import torch

from fwp_rl import evaluate, harness
from fwp_rl.agents import sb3
from fwp_rl.cli import main
from fwp_rl.envs.vector import Episode
from fwp_rl.harness import EVAL_SEED_OFFSET
from fwp_rl.learners import LEARNERS, learner, load_config
from fwp_rl.runs import load_checkpoint, read_metrics

from test_harness import ITERATION, TINY, budget, tiny_config

EVAL_KEYS = ["eval/return_mean", "eval/return_std", "eval/length_mean"]
TRAINING_ENVS = {"neuroevolution": 6, "ppo": 4, "sb3_recurrent_ppo": 4}  # the tiny configs' envs (NE: candidates)


def played(monkeypatch, scores=None):
    """Every evaluation's (envs it was given, seed, episodes): ``run_episodes`` as learners' ``play`` call it. With
    ``scores``, each evaluation plays no episode but gives episodes of the next score as their return."""
    calls, play = [], evaluate.run_episodes

    def recorded(agent, envs, frame, episodes, seed, record=False, progress=None):
        num_envs = envs.num_envs
        if scores is None:
            finished = play(agent, envs, frame, episodes, seed, record)[0]
        else:
            envs.close()
            finished = [Episode(scores[len(calls)], 3)] * episodes
        calls.append((num_envs, seed, finished))
        return finished, {}

    monkeypatch.setattr(evaluate, "run_episodes", recorded)
    monkeypatch.setattr(sb3, "run_episodes", recorded)
    return calls


def policies(monkeypatch):
    """The policy of every checkpoint the harness writes, by its update (or generation)."""
    save, saved = harness.save_checkpoint, {}

    def recorded(path, payload, previous):
        saved[payload["update"]] = {k: v.clone() for k, v in payload["policy"].items()}  # not the live parameters
        save(path, payload, previous)

    monkeypatch.setattr(harness, "save_checkpoint", recorded)
    return saved


@pytest.mark.parametrize("name", LEARNERS)
def test_each_learner_evaluates_every_eval_every_iterations_and_at_the_end_in_an_env_of_its_own(
        tmp_path, monkeypatch, wandb_runs, name):
    calls = played(monkeypatch)
    config = tiny_config(tmp_path, name, "run.eval_every=2", "run.eval_episodes=3", "seed=5")
    run_dir = learner(name).train(config).run_dir
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r[ITERATION[name]] for r in records if set(EVAL_KEYS) <= set(r)] == [2, 3]  # every 2, and the end
    assert [r[ITERATION[name]] for r in records if "eval/return_std" in r] == [2, 3]
    # one env of its own (training steps several), seeded apart from training's seeds (5, 6, ...), the same each time
    assert [(num_envs, seed, len(episodes)) for num_envs, seed, episodes in calls] == [(1, 5 + 2**30, 3)] * 2
    assert TRAINING_ENVS[name] > 1 and EVAL_SEED_OFFSET == 2**30
    for (_, _, episodes), record in zip(calls, (r for r in records if "eval/return_mean" in r)):
        returns = torch.tensor([e.raw_return for e in episodes], dtype=torch.float64)
        assert record["eval/return_mean"] == pytest.approx(returns.mean().item())
        assert record["eval/return_std"] == pytest.approx(returns.std(correction=0).item())
        assert record["eval/length_mean"] == pytest.approx(sum(e.length for e in episodes) / 3)
    # W&B sees the same records: the evaluation is in its update's record, at its step
    assert wandb_runs[0].history() == records
    assert [r["step"] for r in records] == TINY[name][1]


@pytest.mark.parametrize("name", LEARNERS)
def test_evaluations_leave_training_as_it_would_be_without_them(tmp_path, name):
    def trained(folder, *overrides):
        run_dir = learner(name).train(tiny_config(tmp_path / folder, name, "run.wandb=disabled", *overrides)).run_dir
        figures = [{k: v for k, v in r.items() if "second" not in k and not k.startswith("eval/")}
                   for r in read_metrics(run_dir / "metrics.jsonl")]
        return figures, load_checkpoint(run_dir)["policy"]

    (tmp_path / "with").mkdir(), (tmp_path / "without").mkdir()
    figures, policy = trained("with", "run.eval_every=1", "run.eval_deterministic=true")
    figures_without, policy_without = trained("without")
    assert figures == figures_without
    assert all(torch.equal(policy[k], policy_without[k]) for k in policy_without)


@pytest.mark.parametrize("name", LEARNERS)
def test_best_pt_is_the_checkpoint_of_the_best_evaluation_and_a_resume_goes_on_comparing_with_it(
        tmp_path, monkeypatch, name):
    saved = policies(monkeypatch)
    played(monkeypatch, scores=[0.2, 0.5, 0.3, 0.4, 0.45, 0.6])
    overrides = ("run.wandb=disabled", "run.eval_every=1", "run.checkpoint_every=10")
    run_dir = learner(name).train(tiny_config(tmp_path, name, budget(name, 3), *overrides)).run_dir
    assert sorted(saved) == [1, 2, 3]  # the new bests (1, 2) and the end: not run.checkpoint_every's
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["update"] == 2 and best["best_evaluation"] == {"update": 2, "return_mean": 0.5}
    assert all(torch.equal(best["policy"][k], v) for k, v in saved[2].items())
    assert load_checkpoint(run_dir)["best_evaluation"] == {"update": 2, "return_mean": 0.5}
    # 0.4 and 0.45 do not beat the 0.5 before the resume; 0.6 does
    for iterations, best_update in [(5, 2), (6, 6)]:
        config = load_config(str(run_dir / "config.yaml"), [budget(name, iterations)])
        assert learner(name).train(config, resume=run_dir) == (run_dir, True)
        assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["update"] == best_update
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["eval/return_mean"] for r in records] == pytest.approx([0.2, 0.5, 0.3, 0.4, 0.45, 0.6])
    assert all(torch.equal(load_checkpoint(run_dir / "checkpoints" / "best.pt")["policy"][k], v)
               for k, v in saved[6].items())


def test_a_kill_between_latest_pt_and_its_copy_as_best_pt_is_mended_by_the_resume(tmp_path, monkeypatch):
    played(monkeypatch, scores=[0.5, 0.1, 0.2])

    def killed(source, path):
        raise RuntimeError("killed")  # where a kill would stop the copy

    monkeypatch.setattr(harness, "atomic_copy", killed)
    config = tiny_config(tmp_path, "ppo", "run.wandb=disabled", "run.eval_every=1")
    with pytest.raises(RuntimeError, match="killed"):
        learner("ppo").train(config)
    run_dir = tmp_path / "runs" / "tiny"
    assert load_checkpoint(run_dir)["best_evaluation"] == {"update": 1, "return_mean": 0.5}
    assert not (run_dir / "checkpoints" / "best.pt").exists()
    monkeypatch.undo()
    played(monkeypatch, scores=[0.1, 0.2])
    learner("ppo").train(load_config(str(run_dir / "config.yaml"), []), resume=run_dir)
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["update"] == 1


# ---------------------------------------------------------------------------------------------- evaluate --checkpoint
@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """A PPO run of 3 updates evaluated at each, a checkpoint at each: best.pt, previous.pt (update 2), latest.pt."""
    tmp_path = tmp_path_factory.mktemp("evaluated")
    config = tiny_config(tmp_path, "ppo", "run.wandb=disabled", "run.eval_every=1", "run.checkpoint_every=1",
                         "run.eval_episodes=2")
    return learner("ppo").train(config).run_dir


@pytest.mark.parametrize("which, file", [("best", "best.pt"), ("latest", "latest.pt"), ("previous", "previous.pt"),
                                         ("checkpoints/previous.pt", "previous.pt"), (None, "latest.pt")])
def test_evaluate_checkpoint_replays_the_checkpoint_it_names(evaluated_run, which, file):
    checkpoint = evaluated_run / "checkpoints" / file
    (evaluated_run / "checkpoints" / f"{file}.eval.json").unlink(missing_ok=True)
    figures = evaluate.evaluate_checkpoint(str(evaluated_run), episodes=2, which=which)
    assert figures["checkpoint"] == str(checkpoint) and (checkpoint.parent / f"{file}.eval.json").is_file()
    option = [] if which is None else ["--checkpoint", which]
    assert main(["evaluate", str(evaluated_run), "--episodes", "1", *option]) == 0


def test_evaluate_checkpoint_errors_are_one_line(evaluated_run, tmp_path, capsys):
    plain = learner("ppo").train(tiny_config(tmp_path, "ppo", "run.wandb=disabled", budget("ppo", 1))).run_dir
    best = evaluated_run / "checkpoints" / "best.pt"
    for argv, message in [
            ([str(plain), "--checkpoint", "best"],
             f"'{plain}' has no checkpoints/best.pt: the run had no evaluation (set run.eval_every)"),
            ([str(plain), "--checkpoint", "previous"],
             f"'{plain}' has no checkpoints/previous.pt: the run has written one checkpoint only"),
            ([str(best), "--checkpoint", "best"],
             f"--checkpoint best picks a checkpoint of a run directory, and '{best}' is not one: give the run "
             "directory, or the checkpoint file alone"),
            ([str(evaluated_run), "--checkpoint", "step_7.pt"],
             f"checkpoint '{evaluated_run / 'step_7.pt'}' does not exist")]:
        assert main(["evaluate", *argv]) == 2
        assert capsys.readouterr().err == f"fwp-rl: error: {message}\n"


def test_eval_video_every_records_an_evaluation_and_logs_it_to_w_and_b(tmp_path, wandb_offline):
    """run.eval_video_every=2 with an evaluation every update: the evaluations of update 2 (the 2nd) and 3 (the last)
    record their episode as videos/update_<k>.mp4, which the W&B run (read back from its offline files) holds at the
    update's step as eval/video; the others record none."""
    import imageio.v2 as imageio

    from conftest import wandb_offline_records

    config = tiny_config(tmp_path, "ppo", "run.eval_every=1", "run.eval_episodes=1", "run.eval_video_every=2")
    run_dir = learner("ppo").train(config).run_dir
    records = read_metrics(run_dir / "metrics.jsonl")
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == ["update_2.mp4", "update_3.mp4"]
    for update in (2, 3):
        frames = imageio.mimread(run_dir / "videos" / f"update_{update}.mp4")
        assert len(frames) == records[update - 1]["eval/length_mean"] and frames[0].std() > 5
    logged = {}  # step: the video's fields (W&B writes one history item per field, keyed [key, field])
    for r in wandb_offline_records(run_dir):
        for item in r.history.item if r.WhichOneof("record_type") == "history" else []:
            if list(item.nested_key[:1]) == ["eval/video"]:
                logged.setdefault(r.history.step.num, {})[item.nested_key[1]] = json.loads(item.value_json)
    assert list(logged) == [records[1]["step"], records[2]["step"]]
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    for video in logged.values():
        assert video["_type"] == "video-file" and (files / video["path"]).is_file()
    assert all("eval/video" not in r for r in records)  # videos go to W&B only
