"""The docs cannot drift from the code: commands name real flags, links resolve.

Every ``python -m stride_jax.…`` / ``python scripts/….py`` / ``bash scripts/….sh`` command
in README.md and docs/*.md (fenced code blocks and inline code spans) must name a module or
script that exists and only flags it defines.  Nothing is run: absl entry points have
their ``_define_flags()`` called in a subprocess (so this process's ``absl.flags.FLAGS``
stays untouched), argparse scripts have their parser captured when ``parse_args`` is
called, and ``--config.a.b=…`` overrides are looked up in the ConfigDict of the config file
the command names (or the entry point's default).  Every relative link and image must
point at an existing file, and ``#anchor`` parts at a heading of the target (GitHub
slugs).

    python -m pytest -q tests/test_docs_commands.py
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path
from unittest import mock

import ml_collections
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Flags every absl program accepts besides those it defines (absl.app / FlagValues).
ABSL_BUILTIN = {"help": True, "helpshort": True, "helpfull": True, "helpxml": True,
                "?": True, "flagfile": False, "undefok": False}
PYTHON_RE = re.compile(r"^(?:.*/)?python(?:\d+(?:\.\d+)?)?$")
# Interpreter options that come between ``python`` and the module / script.
PYTHON_OPTS_NO_ARG = {"-u", "-O", "-OO", "-B", "-s", "-S", "-E", "-I", "-q"}
PYTHON_OPTS_ARG = {"-X", "-W"}
SEPARATORS = {"&&", "||", ";", "|", "&", "|&"}
REDIRECT_RE = re.compile(r"^(?:\d*>>?|&>>?|<|\d*>&\d*)")
NEGATIVE_NUMBER_RE = re.compile(r"^-(?:\d|\.\d)")
PLACEHOLDER = "_PLACEHOLDER_"     # what `<…>` in a command becomes
PLACEHOLDER_RE = re.compile(r"[<>*]|\.\.\.|…|\$|" + PLACEHOLDER)


# --------------------------------------------------------------------------- markdown


@dataclasses.dataclass(frozen=True)
class Snippet:
    """Text that may hold shell commands: a fenced-block line or an inline code span."""
    line: int          # 1-based line of the doc where it starts
    text: str
    inline: bool


def _split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """(prose lines, fenced-block lines): (line number, text[, info string])."""
    prose, code = [], []
    fence = None          # (char, length, info) while inside a fenced block
    for number, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)", line)
        if fence is None:
            if m:
                fence = (m.group(1)[0], len(m.group(1)), m.group(2).lower())
                prose.append((number, ""))      # a fence ends the paragraph before it
                continue
            prose.append((number, line))
        else:
            if (m and m.group(1)[0] == fence[0] and len(m.group(1)) >= fence[1]
                    and not m.group(2)):
                fence = None
                prose.append((number, ""))
                continue
            code.append((number, line, fence[2]))
            prose.append((number, ""))
    return prose, code


_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Blank-line separated paragraphs of the prose: (first line number, text)."""
    out, start, lines = [], None, []
    for number, line in prose + [(0, "")]:
        if line.strip():
            if start is None:
                start = number
            lines.append(line)
        elif start is not None:
            out.append((start, "\n".join(lines)))
            start, lines = None, []
    return out


def inline_spans(text: str) -> list[tuple[int, str]]:
    """Inline code spans outside fenced blocks: (line, content with newlines as spaces)."""
    prose, _ = _split_fences(text)
    spans = []
    for start, para in _paragraphs(prose):
        for m in _SPAN_RE.finditer(para):
            line = start + para.count("\n", 0, m.start())
            spans.append((line, " ".join(m.group(2).split())))
    return spans


def snippets(text: str) -> list[Snippet]:
    """Fenced-block logical lines (backslash continuations joined) and inline spans."""
    _, code = _split_fences(text)
    out, pending, first, previous = [], "", 0, 0
    for number, line, info in code:
        if info in ("python", "py", "pycon", "json", "toml", "yaml", "csv", "text"):
            continue
        if pending and number != previous + 1:      # a continuation never leaves its block
            out.append(Snippet(first, pending, inline=False))
            pending = ""
        previous = number
        if not pending:
            first = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append(Snippet(first, pending + line, inline=False))
        pending = ""
    if pending:
        out.append(Snippet(first, pending, inline=False))
    out += [Snippet(line, span, inline=True) for line, span in inline_spans(text)]
    return sorted(out, key=lambda s: s.line)


# --------------------------------------------------------------------------- shell


def _drop_substitutions(s: str) -> str:
    """Replaces ``$(…)`` / ``$((…))`` (nested parentheses too) by a placeholder word."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("$(", i):
            depth, j = 0, i + 1
            while j < len(s):
                depth += {"(": 1, ")": -1}.get(s[j], 0)
                if depth == 0:
                    break
                j += 1
            out.append("SUBST")
            i = j + 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _tokens(s: str) -> list[str]:
    s = _drop_substitutions(s)
    s = re.sub(r"<[^<>\s&][^<>]*?>", PLACEHOLDER, s)       # <your dir>, <preset>
    try:
        lex = shlex.shlex(s, posix=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        return list(lex)
    except ValueError:           # unbalanced quote in prose: a plain split is enough
        return s.split(" #", 1)[0].split()


def _segments(tokens: list[str]) -> list[list[str]]:
    """Splits a token list at ``&&``, ``||``, ``;``, ``|`` (one command each)."""
    segs, cur = [], []
    for tok in tokens:
        if tok in SEPARATORS:
            segs.append(cur)
            cur = []
        elif tok.endswith(";"):
            cur.append(tok[:-1])
            segs.append(cur)
            cur = []
        elif tok not in ("(", ")"):
            cur.append(tok.lstrip("(") if tok.startswith("(") else tok)
    segs.append(cur)
    return segs


def _is_prefix(tok: str) -> bool:
    """Tokens that may precede the program: env assignments, nice/time/env and the like."""
    return (bool(re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tok)) or tok in
            ("nice", "-n", "env", "time", "timeout", "nohup", "exec", "do", "then", "$",
             "sudo", "ionice", "taskset", "--") or bool(re.match(r"^-?\d+[smh]?$", tok)))


@dataclasses.dataclass(frozen=True)
class Command:
    program: str        # "module:stride_jax.align" or "path:scripts/x.py" / "path:…sh"
    args: tuple[str, ...]
    text: str           # the command as written (for messages)


def commands(snippet_text: str) -> list[Command]:
    """The stride_jax / scripts commands of one snippet; other programs are ignored."""
    out = []
    for seg in _segments(_tokens(snippet_text)):
        i = 0
        while i < len(seg) and _is_prefix(seg[i]):
            i += 1
        if i >= len(seg):
            continue
        program, rest = None, []
        tok = seg[i]
        if PYTHON_RE.match(tok):
            j = i + 1
            while j < len(seg) and (seg[j] in PYTHON_OPTS_NO_ARG or seg[j] in PYTHON_OPTS_ARG):
                j += 2 if seg[j] in PYTHON_OPTS_ARG else 1
            if j + 1 < len(seg) and seg[j] == "-m":
                if seg[j + 1].split(".")[0] in ("stride_jax", "scripts"):
                    program, rest = f"module:{seg[j + 1]}", seg[j + 2:]
            elif j < len(seg) and _repo_path(seg[j]):
                program, rest = f"path:{_repo_path(seg[j])}", seg[j + 1:]
        elif tok in ("bash", "sh") and i + 1 < len(seg) and _repo_path(seg[i + 1]):
            program, rest = f"path:{_repo_path(seg[i + 1])}", seg[i + 2:]
        elif (_repo_path(tok) or "").startswith("scripts/") and len(seg) > i + 1:
            # `scripts/x.py --flag …` without `python`; a bare file name is no command.
            program, rest = f"path:{_repo_path(tok)}", seg[i + 1:]
        if program is None:
            continue
        args = []
        for a in rest:
            if REDIRECT_RE.match(a) or a == "tee":
                break
            args.append(a.strip("[]") if a.startswith("[") or a.endswith("]") else a)
        out.append(Command(program, tuple(args), shlex.join(seg[i:])))
    return out


def _repo_path(tok: str) -> str | None:
    """``scripts/x.py`` / ``./stride_jax/y.py`` / ``scripts/z.sh``: the repo-relative path
    (None for any other word)."""
    tok = tok[2:] if tok.startswith("./") else tok
    if re.match(r"^(scripts|stride_jax)/[\w./-]+\.(py|sh)$", tok):
        return tok
    return None


# --------------------------------------------------------------------------- flag specs


@dataclasses.dataclass
class Spec:
    """The flags one program accepts."""
    kind: str                                   # "absl" | "argparse" | "none"
    flags: dict[str, bool]                      # absl: name -> boolean; argparse: opt -> _
    config_flags: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> file


_ABSL_PROBE = textwrap.dedent("""
    import importlib, json, sys
    from absl import flags
    import absl.app, absl.logging  # noqa: F401  (their flags are accepted too)
    FLAGS = flags.FLAGS
    base = {n: FLAGS[n].boolean for n in FLAGS}
    out = {}
    for name in sys.argv[1:]:
        mod = importlib.import_module(name)
        before = set(FLAGS)
        mod._define_flags()
        new = [n for n in FLAGS if n not in before]
        cfg = {n: str(FLAGS[n].config_filename) for n in new
               if hasattr(FLAGS[n], "config_filename")}
        out[name] = {"flags": {n: FLAGS[n].boolean for n in new}, "config_flags": cfg}
        for n in new:
            if n in FLAGS:
                delattr(FLAGS, n)
    print(json.dumps({"base": base, "modules": out}))
""")


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__main__.py"):
        if cand.is_file():
            return cand
    return None


@functools.cache
def _absl_modules() -> dict[str, Spec]:
    """Specs of every stride_jax module whose flags come from ``_define_flags()``."""
    names = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "stride_jax").rglob("*.py")
        if re.search(r"^def _define_flags\(", p.read_text(encoding="utf-8"), re.M))
    proc = subprocess.run([sys.executable, "-c", _ABSL_PROBE, *names], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"collecting absl flags of {names} failed:\n{proc.stderr}"
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    base = {**data["base"], **ABSL_BUILTIN}
    return {name: Spec("absl", {**base, **m["flags"]}, m["config_flags"])
            for name, m in data["modules"].items()}


class _ParserBuilt(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser built")
        self.parser = parser


def _capture(self, *args, **kwargs):
    raise _ParserBuilt(self)


def _argparse_options_static(path: Path) -> set[str]:
    """Fallback when a script cannot be imported here (e.g. torch missing): the string
    options of its ``add_argument`` calls (BooleanOptionalAction adds ``--no-x``)."""
    opts = {"-h", "--help"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            names = [a.value for a in node.args
                     if isinstance(a, ast.Constant) and isinstance(a.value, str)
                     and a.value.startswith("-")]
            opts.update(names)
            if any(k.arg == "action" and "BooleanOptional" in ast.unparse(k.value)
                   for k in node.keywords):
                opts.update("--no-" + n[2:] for n in names if n.startswith("--"))
    return opts


def _argparse_options(path: Path, load) -> set[str]:
    """Option strings of the parser the program's ``parse_args(argv)`` / ``main(argv)``
    builds, captured when it calls ``parse_args`` (nothing after that runs)."""
    try:
        mod = load()
    except ImportError:
        return _argparse_options_static(path)
    fn = getattr(mod, "parse_args", None) or getattr(mod, "main", None)
    assert fn is not None, f"{path.relative_to(REPO)}: neither parse_args() nor main()"
    with mock.patch.object(argparse.ArgumentParser, "parse_args", _capture), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", _capture), \
            mock.patch.object(argparse.ArgumentParser, "parse_intermixed_args", _capture):
        try:
            fn([])
        except _ParserBuilt as built:
            return set(built.parser._option_string_actions)
        except ImportError:
            return _argparse_options_static(path)
    raise AssertionError(f"{path.relative_to(REPO)}: {fn.__name__}([]) parsed no arguments")


def _load_script(path: Path):
    name = "_docs_cmd_" + re.sub(r"\W", "_", str(path.relative_to(REPO).with_suffix("")))
    if name in sys.modules:
        return sys.modules[name]
    saved = list(sys.path)
    sys.path[:0] = [str(path.parent), str(REPO)]     # sibling imports, `from configs …`
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[name]
            raise
        return mod
    finally:
        sys.path[:] = saved


@functools.cache
def spec_of(program: str) -> Spec | str:
    """The program's flags, or a message why it cannot be checked (missing file)."""
    kind, _, target = program.partition(":")
    if kind == "module":
        path = _module_file(target)
        if path is None:
            return f"no module {target} (no {target.replace('.', '/')}.py)"
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(
            ".__main__")
    else:
        path = REPO / target
        if not path.is_file():
            return f"no file {target}"
        if path.suffix == ".sh":          # a wrapper forwarding "$@" to its .py twin
            twin = path.with_suffix(".py")
            if not twin.is_file():
                return Spec("none", {})
            path = twin
        module = (".".join(path.relative_to(REPO).with_suffix("").parts)
                  if path.relative_to(REPO).parts[0] == "stride_jax" else None)
    if module in _absl_modules():
        return _absl_modules()[module]
    if re.search(r"\bapp\.run\(", path.read_text(encoding="utf-8")):
        # Its main(argv) would run the program: never call it to find a parser.
        return (f"{path.relative_to(REPO)} is an absl program without a module-level "
                "_define_flags(): its flags cannot be read without running it")
    if module is not None:
        opts = _argparse_options(path, lambda: importlib.import_module(module))
    else:
        opts = _argparse_options(path, lambda: _load_script(path))
    return Spec("argparse", dict.fromkeys(opts, False))


# --------------------------------------------------------------------------- configs


@functools.cache
def load_config(file: str, arg: str | None) -> ml_collections.ConfigDict:
    path = Path(file) if Path(file).is_absolute() else REPO / file
    mod = _load_script(path)
    return mod.get_config(arg) if arg is not None else mod.get_config()


def _config_file_of(cmd: Command, flag: str, default: str) -> tuple[str, str | None]:
    """(file, get_config arg) named by ``--<flag> FILE[:ARG]`` in the command."""
    value = default
    args = list(cmd.args)
    for k, a in enumerate(args):
        if a.lstrip("-") == flag and a.startswith("-") and k + 1 < len(args):
            value = args[k + 1]
        elif a.startswith("-") and a.lstrip("-").startswith(flag + "="):
            value = a.split("=", 1)[1]
    file, sep, arg = value.partition(".py:")
    file = file + ".py" if sep else value
    return file, (arg if sep else None)


def check_config_override(name: str, config: ml_collections.ConfigDict,
                          where: str) -> str | None:
    """``config.a.b`` (leading component stripped) must be a path of the ConfigDict."""
    node, walked = config, []
    for comp in name.split(".")[1:]:
        if PLACEHOLDER_RE.search(comp) or not comp:
            return None                       # --config.ttt.<field>, --config.model.*
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or comp not in node:
            fields = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict,
                                                              dict)) else []
            inside = ".".join(walked) or "the top level"
            return (f"--{name}: {where} has no field {comp!r} under {inside}"
                    + (f" (fields: {', '.join(fields)})" if fields else ""))
        node = node[comp]
        walked.append(comp)
    return None


# --------------------------------------------------------------------------- checks


def _shown(file: str) -> str:
    return str(Path(file).relative_to(REPO)) if Path(file).is_relative_to(REPO) else file


def _config_of(cmd: Command, flag: str,
               default: str) -> tuple[ml_collections.ConfigDict | None, str | None]:
    """(the ConfigDict ``--<flag> FILE[:ARG]`` of the command loads or None, a problem)."""
    file, arg = _config_file_of(cmd, flag, default)
    if PLACEHOLDER_RE.search(file) or (Path(file).is_absolute() and not Path(file).is_file()):
        return None, None                     # --config FILE, a path on another machine
    if not (REPO / file).is_file():
        return None, f"--{flag} {file}: no such config file"
    try:
        return load_config(file, arg), None
    except Exception as err:  # noqa: BLE001  a bad :arg is reported, not raised
        if arg is None or not PLACEHOLDER_RE.search(arg):
            return None, f"--{flag} {_shown(file)}:{arg}: get_config raised {err!r}"
        return load_config(file, None), None  # configs/cpu.py:ttt=<preset>


def check_command(cmd: Command) -> list[str]:
    """Problems of one command (empty when every flag it names exists)."""
    spec = spec_of(cmd.program)
    if isinstance(spec, str):
        return [spec]
    if spec.kind == "none":
        return []
    problems = []
    for a in cmd.args:
        if a == "--":
            break
        if not a.startswith("-") or a == "-" or NEGATIVE_NUMBER_RE.match(a):
            continue
        if spec.kind == "argparse":
            opt = a.split("=", 1)[0] if a.startswith("--") else a
            if opt in spec.flags or (not a.startswith("--") and a[:2] in spec.flags):
                continue
            if PLACEHOLDER_RE.search(opt):
                continue
            near = sorted(o for o in spec.flags if o.startswith(opt))
            problems.append(f"unknown flag {opt}" + (
                f" (an abbreviation of {', '.join(near)}: write it out)" if near else ""))
            continue
        name = a.lstrip("-").split("=", 1)[0]
        if not name or PLACEHOLDER_RE.search(name.split(".")[0]):
            continue
        head = name.split(".")[0]
        if head in spec.config_flags:
            config, problem = _config_of(cmd, head, spec.config_flags[head])
            if problem and problem not in problems:        # once per command
                problems.append(problem)
            if "." in name and config is not None:
                file = _config_file_of(cmd, head, spec.config_flags[head])[0]
                problem = check_config_override(name, config, f"{_shown(file)}'s get_config()")
                if problem:
                    problems.append(problem)
            continue
        if name in spec.flags:
            continue
        if name.startswith("no") and spec.flags.get(name[2:]) is True:
            continue
        problems.append(f"unknown flag --{name}")
    return problems


def _standalone_config_override(span: str) -> str | None:
    """A span that is only ``--config.a.b[=v]`` (e.g. a flag table row)."""
    tokens = span.split()
    if len(tokens) == 1 and re.match(r"^--config\.[\w.]+(=.*)?$", tokens[0]):
        return tokens[0][2:].split("=", 1)[0]
    return None


def doc_command_problems(text: str, doc: str) -> tuple[list[str], int]:
    """(problems as ``doc:line: `command`: problem``, number of commands checked)."""
    problems, count = [], 0
    for snip in snippets(text):
        for cmd in commands(snip.text):
            count += 1
            problems += [f"{doc}:{snip.line}: `{cmd.text}`: {p}" for p in check_command(cmd)]
        override = _standalone_config_override(snip.text) if snip.inline else None
        if override:
            count += 1
            problem = check_config_override(override, load_config("configs/cpu.py", None),
                                            "configs/cpu.py's get_config()")
            if problem:
                problems.append(f"{doc}:{snip.line}: `{snip.text}`: {problem}")
    return problems, count


# --------------------------------------------------------------------------- links


def github_slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """GitHub heading anchors of a markdown text (duplicates get -1, -2, …) and HTML ids."""
    prose, _ = _split_fences(text)
    seen: dict[str, int] = {}
    out = set()
    lines = [line for _, line in prose]
    for k, line in enumerate(lines):
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        heading = m.group(1) if m else None
        if (heading is None and line.strip() and k + 1 < len(lines)
                and re.match(r"^ {0,3}(=+|-+)\s*$", lines[k + 1])
                and not re.match(r"^ {0,3}([-*+]|\d+\.)\s|^ {0,3}\|", line)):
            heading = line.strip()
        if heading is None:
            continue
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    out.update(re.findall(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", text))
    return out


_LINK_RE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*)?\)")
_REF_DEF_RE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML_RE = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.I)


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of the inline links, images, reference definitions and HTML src /
    href attributes outside code."""
    prose, _ = _split_fences(text)
    out = []
    for start, para in _paragraphs(prose):
        # Inline code is not a link: blank it, keeping offsets (line numbers).
        para = _SPAN_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), para)
        for regex in (_LINK_RE, _REF_DEF_RE, _HTML_RE):
            for m in regex.finditer(para):
                out.append((start + para.count("\n", 0, m.start()), m.group(1)))
    return sorted(out)


def doc_link_problems(text: str, doc_path: Path) -> tuple[list[str], int]:
    """(problems as ``doc:line: link: problem``, number of relative links checked)."""
    shown = doc_path.relative_to(REPO) if doc_path.is_relative_to(REPO) else doc_path
    problems, count = [], 0
    for line, target in links(text):
        if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue                                  # http(s):, mailto:, …
        count += 1
        path_part, _, anchor = target.partition("#")
        path_part = urllib.parse.unquote(path_part)
        if not path_part:
            dest = doc_path
        elif path_part.startswith("/"):
            dest = REPO / path_part.lstrip("/")
        else:
            dest = (doc_path.parent / path_part).resolve()
        if path_part and not dest.exists():
            problems.append(f"{shown}:{line}: ({target}): {path_part} does not exist")
            continue
        if anchor and dest.suffix.lower() == ".md" and (dest == doc_path or dest.is_file()):
            heads = text if dest == doc_path else dest.read_text(encoding="utf-8")
            if urllib.parse.unquote(anchor) not in anchors(heads):
                problems.append(f"{shown}:{line}: ({target}): no heading #{anchor} in "
                                f"{dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}"
                                f" (anchors: {', '.join(sorted(anchors(heads)))})")
    return problems, count


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_doc_commands_name_existing_flags(doc: Path):
    problems, _ = doc_command_problems(doc.read_text(encoding="utf-8"),
                                       str(doc.relative_to(REPO)))
    assert not problems, "commands in the docs that do not match the code:\n" + "\n".join(
        problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_doc_links_resolve(doc: Path):
    problems, _ = doc_link_problems(doc.read_text(encoding="utf-8"), doc)
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)


def test_docs_hold_commands_and_links():
    """The checks above are not vacuous: the docs' commands and links are found."""
    n_commands = n_links = 0
    programs = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for snip in snippets(text):
            programs.update(c.program for c in commands(snip.text))
        n_commands += doc_command_problems(text, doc.name)[1]
        n_links += doc_link_problems(text, doc)[1]
    assert n_commands >= 40 and n_links >= 20, (n_commands, n_links)
    assert {"module:stride_jax.align", "module:stride_jax.pretrain",
            "module:stride_jax.evaluate", "path:scripts/tune_ttt.py"} <= programs, programs


_BAD = [
    # (markdown, the problem that must be reported)
    ("```bash\npython -m stride_jax.align --input a.npz --nonexistent_flag\n```\n",
     "unknown flag --nonexistent_flag"),
    ("Run `python -m stride_jax.evaluate --seeds 0,1\n--nonexistent_flag=3` once.\n",
     "unknown flag --nonexistent_flag"),
    ("```\nnice -n 19 python -m stride_jax.pretrain --config configs/cpu.py:runlocal \\\n"
     "    --workdir $(mktemp -d) --nonexistent_flag\n```\n", "unknown flag --nonexistent_flag"),
    ("```\npython -m stride_jax.align --noinput\n```\n", "unknown flag --noinput"),
    ("```\npython -m stride_jax.align --config.ttt.nonexistent_field=1\n```\n",
     "no field 'nonexistent_field' under ttt"),
    ("```\npython -m stride_jax.pretrain --config=configs/motionbert.py "
     "--config.nonexistent_section.x=2\n```\n", "no field 'nonexistent_section'"),
    ("```\npython -m stride_jax.pretrain --config configs/nonexistent.py "
     "--config.seed=2\n```\n", "no such config file"),
    ("`python -m stride_jax.align --config=configs/cpu.py:nonexistent_arg`\n",
     "get_config raised ValueError"),
    ("```\npython -m stride_jax.nonexistent_module --help\n```\n", "no module"),
    ("`python scripts/nonexistent_script.py`\n", "no file scripts/nonexistent_script.py"),
    ("```\npython scripts/tune_ttt.py --split val --variants '{\"a\": {}}' "
     "--nonexistent_flag 1\n```\n", "unknown flag --nonexistent_flag"),
    ("```\nSTRIDE_DATA=/tmp/x python -m stride_jax.data.prepare --root DIR "
     "--nonexistent_flag\n```\n", "unknown flag --nonexistent_flag"),
    ("`python -m stride_jax.data.fetch && python scripts/bench_align.py --no-nonexistent`\n",
     "unknown flag --no-nonexistent"),
    ("```\nbash scripts/gpu_check.sh --nonexistent-flag\n```\n",
     "unknown flag --nonexistent-flag"),
    ("| `--config.ttt.nonexistent_field` | 1 | a flag table row |\n",
     "no field 'nonexistent_field' under ttt"),
]

_GOOD = [
    "```bash\npython -m stride_jax.align --input a.npz --output out/  # comment --bogus\n```\n",
    "```\n.venv/bin/python -m stride_jax.align --noresume --config.ttt.epochs=0 --help\n```\n",
    "`python -m stride_jax.pretrain --config configs/cpu.py:ttt=paper "
    "--config.ttt.loss.velocity=2 --config.pretrain.num_steps=N`\n",
    "```\npython -m stride_jax.pretrain --config configs/cpu.py:ttt=<preset> "
    "--config.pretrain.batch_size=$((64 / N)) --num_processes 2 --process_id 0 \\\n"
    "    --coordinator_address host:1234 > log.txt 2>&1\n```\n",
    "`python scripts/tune_ttt.py --split val --views plain,fast --config_arg ttt=paper "
    "--json_out x.json --variants '{\"prior\": {\"epochs\": 0}}'`\n",
    "```\nbash scripts/gpu_check.sh --dry-run\npython scripts/bench_align.py --no-full_vmap "
    "--T_sweep \"\"\n```\n",
    "```\npip install --nonexistent_flag x && python -m pytest --nonexistent_flag\n"
    "git log --nonexistent_flag; torchrun --nonexistent_flag train.py\n```\n",
    "`python -m stride_jax.data.prepare --amass DIR [--amass_splits SPEC]`\n",
]


@pytest.mark.parametrize("markdown,expected", _BAD, ids=range(len(_BAD)))
def test_self_check_reports_wrong_commands(markdown: str, expected: str):
    problems, count = doc_command_problems(markdown, "docs/example.md")
    assert count >= 1
    assert len(problems) == 1 and expected in problems[0], problems
    assert problems[0].startswith("docs/example.md:"), problems   # file and line named


def test_self_check_reports_line_and_command():
    text = "# T\n\ntext\n\n```\npython -m stride_jax.align \\\n  --nonexistent_flag\n```\n"
    problems, _ = doc_command_problems(text, "README.md")
    assert problems == ["README.md:6: `python -m stride_jax.align --nonexistent_flag`: "
                        "unknown flag --nonexistent_flag"]


@pytest.mark.parametrize("markdown", _GOOD, ids=range(len(_GOOD)))
def test_self_check_accepts_right_commands(markdown: str):
    problems, _ = doc_command_problems(markdown, "docs/example.md")
    assert problems == []


def test_self_check_links():
    doc = REPO / "docs" / "example.md"        # never written: only its folder matters
    text = ("# My Title: (v2)\n\n## My Title: (v2)\n\n"
            "[a](align.md) [b](align.md#library-api) ![c](demo/demo_results_0_loss.png)\n"
            "[d](#my-title-v2-1) [e](https://example.com/x.md) `[f](not_a_link.md)`\n"
            "[g](nonexistent.md) [h](align.md#no-such-heading)\n[i]: ../nonexistent.png\n"
            "```\n[j](inside_code.md)\n```\n[k](#my-title-v2-2)\n")
    problems, count = doc_link_problems(text, doc)
    assert count == 8
    assert [p.split(": (")[0] for p in problems] == [
        "docs/example.md:7", "docs/example.md:7", "docs/example.md:8",
        "docs/example.md:12"], problems
    assert "no heading #no-such-heading in docs/align.md" in problems[0]
    assert "nonexistent.md does not exist" in problems[1]
    assert "../nonexistent.png does not exist" in problems[2]
    assert "no heading #my-title-v2-2" in problems[3]
