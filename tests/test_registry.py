"""Registries: decorator, built-in discovery, closest-match errors and real entry points."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import registry
from harness.errors import HarnessError, UnknownNameError
from harness.registry import Registry


def test_builtins_are_found_by_their_folder():
    assert {"srpo", "dpo", "ipo", "simpo", "rpo"} <= set(registry.methods.names())
    assert "bandit" in registry.tasks.names()
    assert "oracle" in registry.judges.names()


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(UnknownNameError) as info:
        registry.methods.get("srp")
    message = str(info.value)
    assert "unknown method 'srp'" in message and "did you mean 'srpo'" in message
    assert "dpo, ipo, rpo, simpo, srpo" in message


def test_same_name_registered_twice_by_different_objects_fails():
    reg = Registry("methods", "harness.methods")

    @reg.register("twin")
    class A:
        pass

    with pytest.raises(HarnessError, match="registered twice"):

        @reg.register("twin")
        class B:
            pass


def test_list_shows_descriptions_and_defaults(cli):
    out = cli("list", "methods")
    assert out.returncode == 0, out.stderr
    assert "srpo" in out.stdout and "Self-Improving Robust Preference Optimization" in out.stdout
    assert "beta=0.01" in out.stdout and "gamma=0.5" in out.stdout


def test_entry_point_plugin_from_an_installed_package(tmp_path, cli):
    """A throwaway distribution adds a method through the harness.methods entry-point group."""
    src = tmp_path / "src"
    (src / "hinge_plugin").mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "hinge-plugin"
        version = "0.0.1"
        [project.entry-points."harness.methods"]
        hinge = "hinge_plugin"
        [tool.setuptools]
        packages = ["hinge_plugin"]
    """))
    (src / "hinge_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        import torch
        from harness.method import CHOSEN, REJECTED, Method, register

        @register("hinge")
        @dataclass
        class Hinge(Method):
            """SLiC-style hinge loss on the log-ratio margin (a plugin from outside the repo)."""
            beta: float = 1.0
            needs = (CHOSEN, REJECTED)
            def loss(self, policy, reference):
                margin = self.ratio(policy, reference, CHOSEN) - self.ratio(policy, reference, REJECTED)
                return torch.relu(1 - self.beta * margin), {"margin": margin.detach()}
    '''))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {"PYTHONPATH": str(target)}
    listing = cli("list", "methods", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "hinge" in listing.stdout and "SLiC-style hinge loss" in listing.stdout
    out_dir = tmp_path / "run"
    run = cli("run", "--task", "bandit", "--method", "hinge", "--task-arg", "steps=50", "--task-arg", "pairs=500",
              "--output-dir", str(out_dir), env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out_dir / "summary.json").exists()


def _install(tmp_path, name: str, entry_points: dict[str, str], files: dict[str, str]) -> str:
    """pip-install a throwaway distribution into its own folder; returns that folder for PYTHONPATH."""
    src = tmp_path / f"src-{name}"
    src.mkdir()
    groups = "".join(f'[project.entry-points."{g}"]\n{k} = "{v}"\n' for g, ep in entry_points.items() for k, v in [ep.split("=", 1)])
    packages = sorted({f.split("/")[0] for f in files})
    (src / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n[project]\nname = "{name}"\nversion = "0.0.1"\n'
        f"{groups}[tool.setuptools]\npackages = {packages!r}\n"
    )
    for relative, text in files.items():
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_text(textwrap.dedent(text))
    target = tmp_path / f"site-{name}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True)  # fmt: skip
    return str(target)


def test_a_broken_plugin_fails_alone(tmp_path, cli):
    site = _install(tmp_path, "broken-plugin", {"harness.methods": "broken=broken_plugin"}, {"broken_plugin/__init__.py": "import not_a_module\n"})
    listing = cli("list", "methods", env={"PYTHONPATH": site})
    assert listing.returncode == 0 and "srpo" in listing.stdout  # the others still work
    assert "warning: the harness.methods entry point 'broken' (broken_plugin) of broken-plugin failed to load" in listing.stderr
    asked = cli("run", "--task", "bandit", "--method", "broken", env={"PYTHONPATH": site})
    assert asked.returncode == 2 and "ModuleNotFoundError: No module named 'not_a_module'" in asked.stderr and "Traceback" not in asked.stderr


def test_a_method_that_breaks_the_contract_is_named_with_the_rule(tmp_path, cli):
    scalar = '''
        from dataclasses import dataclass
        from harness.method import CHOSEN, REJECTED, Method, register

        @register("scalar")
        @dataclass
        class Scalar(Method):
            """Returns one number for the whole batch."""
            needs = (CHOSEN, REJECTED)
            def loss(self, policy, reference):
                return (policy.sums[CHOSEN] - policy.sums[REJECTED]).mean(), {}
    '''
    typo = '''
        from dataclasses import dataclass
        from harness.method import Method, register

        @register("typo")
        @dataclass
        class Typo(Method):
            """Needs a key that does not exist."""
            needs = ("chosn",)
            def loss(self, policy, reference):
                return policy.sums["chosn"], {}
    '''
    site = _install(tmp_path, "bad-methods", {"harness.methods": "scalar=scalar_method"}, {"scalar_method/__init__.py": scalar})
    run = cli("run", "--task", "bandit", "--method", "scalar", env={"PYTHONPATH": site})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "method 'scalar' breaks the method contract: loss() must return one loss per pair, shape [B] (here [3]), got []" in run.stderr
    site = _install(tmp_path, "typo-method", {"harness.methods": "typo=typo_method"}, {"typo_method/__init__.py": typo})
    run = cli("run", "--task", "bandit", "--method", "typo", env={"PYTHONPATH": site})
    assert run.returncode == 2 and "`needs` names 'chosn', which is not a sequence key" in run.stderr


def test_check_method_is_a_test_helper_for_plugin_authors():
    import harness
    from harness.method import build_method

    for name in registry.methods.names():
        harness.check_method(build_method(name))  # every built-in keeps the contract


def test_every_command_works_from_a_folder_holding_tasks_methods_and_judges_packages(tmp_path, cli):
    """Common names of the user's own: they neither shadow the harness's plugins nor are shadowed."""
    import json

    from tiny import build_tiny, xsum_files

    work = tmp_path / "project"
    for package in ("tasks", "methods", "judges", "leaderboards"):
        (work / package).mkdir(parents=True)
        (work / package / "__init__.py").write_text("raise ImportError('the user project package was imported')\n")
    tiny = str(build_tiny(tmp_path / "tiny"))
    test, pairs = xsum_files(tmp_path / "data")
    run_args = ["--task", "xsum", "--method", "dpo", "--model", tiny, "--task-arg", f"data_files.test={test}", "--task-arg", f"data_files.preference={pairs}",
                "--limit", "2", "--revisions", "0", "--max-new-tokens", "4", "--train-arg", "batch_size=2", "--output-dir", "out"]  # fmt: skip
    env = {"PYTHONPATH": str(work)}
    commands = [["list"], ["list", "tasks"], ["data", "--task", "xsum", "--task-arg", f"data_files.test={test}"], ["train", *run_args],
                ["generate", *run_args], ["judge", *run_args], ["run", *run_args], ["score", "out"], ["leaderboard", "out", "--out", "board.html"],
                ["run", "--task", "bandit", "--method", "dpo", "--task-arg", "steps=5", "--task-arg", "pairs=50", "--output-dir", "bandit"]]  # fmt: skip
    for command in commands:
        result = cli(*command, cwd=work, env=env)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    assert "xsum" in cli("list", "tasks", cwd=work, env=env).stdout
    assert json.loads((work / "out" / "summary.json").read_text())["task"] == "xsum" and (work / "board.html").exists()


def test_a_checkout_runs_without_installing(tmp_path):
    """PYTHONPATH=CHECKOUT python -m harness.cli, as on a lent GPU machine: the plugin folders beside
    the package still import as harness.methods and siblings (the .pth of an install is not read: -S)."""
    import site

    root = Path(__file__).resolve().parent.parent
    env = {"PYTHONPATH": f"{root}:{site.getsitepackages()[0]}", "PATH": "/usr/bin:/bin"}
    probe = "import harness.methods, harness.judges.alpaca_eval; from harness import registry; print(harness.methods.__file__, registry.methods.names())"
    out = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(str(root / "methods" / "__init__.py")) and "'srpo'" in out.stdout


def _readme_example(first_line: str) -> str:
    """The README's code block that opens with ``first_line``, as a user would paste it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return readme.split(first_line + "\n", 1)[1].split("```", 1)[0]


def test_the_readmes_method_example_works_as_written(tmp_path):
    """README's "Adding a method" block, as a user would paste it: it registers, passes the method
    contract, and a bad value for its bounded option fails with the option named."""
    import os

    (tmp_path / "readme_hinge.py").write_text(_readme_example("# methods/hinge.py"))
    script = textwrap.dedent("""
        import harness, readme_hinge
        from harness.errors import HarnessError
        from harness.method import build_method
        harness.check_method(build_method("hinge"))
        try:
            build_method("hinge", {"beta": -1})
        except HarnessError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "method 'hinge' option 'beta': input should be greater than 0 (got -1)"


def test_the_readme_task_example_installs_lists_and_runs(tmp_path, cli):
    """The README's "Adding a task" module, as it is written there, in a plugin distribution: listed
    with its description and splits, and a whole run on its own files (SRPO trains on its two
    templates, revises, is judged with its instruction and scored)."""
    import json

    from openai_server import FakeOpenAIServer
    from tiny import build_tiny

    module = _readme_example("# tasks/headline.py")
    site = _install(tmp_path, "headline-task", {"harness.tasks": "headline=headline_task"}, {"headline_task/__init__.py": module})
    env = {"PYTHONPATH": site}
    listing = cli("list", "tasks", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "headline" in listing.stdout and "News headlines for your own articles" in listing.stdout and "preference: local file" in listing.stdout
    articles = [f"The council said bridge number {i} will open next year after a delay." for i in range(3)]
    test, pairs = tmp_path / "test.jsonl", tmp_path / "pairs.jsonl"
    test.write_text("".join(json.dumps({"id": str(i), "article": a, "reference": f"Bridge {i} to open"}) + "\n" for i, a in enumerate(articles)))
    pairs.write_text("".join(json.dumps({"id": str(i), "article": a, "chosen": f"Bridge {i} delayed", "rejected": "Cats"}) + "\n" for i, a in enumerate(articles)))
    tiny, out = str(build_tiny(tmp_path / "tiny")), tmp_path / "run"

    def prefers_a(prompt: str) -> str:
        return "A is fine.\nPreferred: A"

    with FakeOpenAIServer(prefers_a) as server:
        run = cli("run", "--task", "headline", "--method", "srpo", "--model", tiny, "--task-arg", f"data_files.test={test}",
                  "--task-arg", f"data_files.preference={pairs}", "--revisions", "1", "--max-new-tokens", "4", "--train-arg", "batch_size=3",
                  "--judge", "openai", "--judge-arg", f"base_url={server.base_url}", "--output-dir", str(out), env=env)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        assert server.prompts and all("The writer's task was: Write a headline that names what the ARTICLE reports." in p for p in server.prompts)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "headline"
    assert {(r["method"], r["revision"], r["n"]) for r in summary["results"] if r["opponent"] == "reference"} == {("srpo", 0, 3), ("srpo", 1, 3)}


def test_a_plugins_code_version_is_in_every_key_of_its_results(monkeypatch):
    """A plugin whose code comes to compute something else from the same options (a method's loss,
    a task's prompt, an engine's completion, a judge's verdict) raises its ``code_version``: the keys
    of its trained models, completions and verdicts change, so stored results are redone. At 0,
    where every plugin starts, a key holds no trace of it: keys made before it existed still hold."""
    from harness.config import jsonable, stable_hash
    from harness.engine import build_engine
    from harness.judge import build_judge
    from harness.method import build_method
    from harness.stages.judge import judge_fingerprint
    from harness.task import build_task

    plugins = {  # each plugin and its results' key, as the stages build it (TrainInputs hashes the method and task themselves)
        "method": (build_method("dpo"), lambda p: stable_hash(p)),
        "task": (build_task("xsum"), lambda p: stable_hash(p)),
        "engine": (build_engine("transformers", {}), lambda p: stable_hash(p.describe_config())),
        "judge": (build_judge("local-lm"), lambda p: judge_fingerprint(p, "summary", True, 0)),
    }
    assert jsonable(build_task("xsum"))["__code_version__"] == 1  # raised: raw prompts start with their tokenizer's BOS, which training once left out
    for kind, (plugin, key) in plugins.items():
        version = type(plugin).code_version
        if version == 0:
            assert "__code_version__" not in str(jsonable(plugin)) + str(getattr(plugin, "describe_config", dict)()), kind
        before = key(plugin)
        monkeypatch.setattr(type(plugin), "code_version", version + 1)
        assert key(plugin) != before, kind
    assert build_engine("openai", {"model": "m"}).describe_config()["__code_version__"] == 1  # rows a server emptied at a stop string are asked again
