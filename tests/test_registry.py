"""Registries: decorator, built-in discovery, closest-match errors and real entry points."""

import subprocess
import sys
import textwrap

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
