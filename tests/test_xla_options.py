"""The XLA CPU options stride_jax sets for itself (stride_jax/xla_options.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from stride_jax import xla_options

FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_appends_to_the_users_flags():
    env = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert xla_options.apply(env) == [FLAG]
    assert env["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {FLAG}"
    assert xla_options.apply(env) == []  # idempotent
    assert env["XLA_FLAGS"].count(FLAG) == 1


def test_sets_flags_when_there_were_none():
    env: dict[str, str] = {}
    assert xla_options.apply(env) == [FLAG]
    assert env["XLA_FLAGS"] == FLAG


def test_the_users_value_of_the_same_option_wins():
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-reduce"}
    assert xla_options.apply(env) == []
    assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def test_an_option_with_a_longer_name_is_not_the_same_option():
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type_extra=1"}
    assert xla_options.apply(env) == [FLAG]


def test_opt_out():
    for value in ("0", "false", "OFF"):
        env = {"STRIDE_JAX_XLA_DEFAULTS": value}
        assert xla_options.apply(env) == []
        assert "XLA_FLAGS" not in env


def _flags_in_a_fresh_process(env_extra: dict[str, str], code: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "STRIDE_JAX_XLA_DEFAULTS")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return proc.stdout.strip()


def test_importing_the_package_sets_them_before_jax_starts():
    code = "import os, stride_jax; print(os.environ.get('XLA_FLAGS', ''))"
    assert _flags_in_a_fresh_process({}, code) == FLAG
    assert _flags_in_a_fresh_process({"STRIDE_JAX_XLA_DEFAULTS": "0"}, code) == ""


def test_not_added_once_jax_has_started():
    """Flags set after the backend started would be ignored; apply() says so by adding none."""
    code = ("import os, jax; jax.numpy.ones(1).block_until_ready(); import stride_jax; "
            "from stride_jax import xla_options; print(repr(os.environ.get('XLA_FLAGS', '')),"
            " xla_options.apply())")
    assert _flags_in_a_fresh_process({}, code) == "'' []"
