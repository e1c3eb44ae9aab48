"""The documentation site (issue 7): it builds under ``mkdocs --strict``, its methods
table covers every registered method with the builders' real defaults, and its
runnable examples run.

Examples marked ``<!-- run -->`` right above a python code block are executed in
page order in one namespace, like a notebook. The "write your own method" page is
then checked further: its method trains and keeps exact counts.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain import criteria
from sparsetrain.core.topk import exact_count
from sparsetrain.distributions import layer_densities
from sparsetrain.methods import method_signature
from sparsetrain.train.recipes import list_recipes

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
METHODS_PAGE = DOCS / "methods.md"
CUSTOM_PAGE = DOCS / "guides" / "custom-method.md"
RUN_BLOCK = re.compile(r"<!-- run -->\n```python\n(.*?)```", re.S)
ROW = re.compile(r"^\| `(?P<name>[A-Za-z0-9_]+)` \|(?P<rest>.*)\|\s*$", re.M)
SPAN = re.compile(r"`([^`]+)`")


def run_blocks(page: Path) -> list[str]:
    return RUN_BLOCK.findall(page.read_text())


@contextlib.contextmanager
def registries_restored():
    """Pages may register methods and criteria: take them out again afterwards, so the
    rest of the session (which iterates over every registered method) does not see them."""
    from sparsetrain.core.registry import REGISTRIES
    saved = {kind: reg.snapshot() for kind, reg in REGISTRIES.items()}
    try:
        yield
    finally:
        for kind, snapshot in saved.items():
            REGISTRIES[kind].restore(snapshot)


def execute(page: Path) -> dict:
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for i, code in enumerate(run_blocks(page)):
        exec(compile(code, f"{page.relative_to(ROOT)} [run block {i + 1}]", "exec"), namespace)  # noqa: S102
    return namespace


# ---------------------------------------------------------------- the site builds


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def test_mkdocs_build_strict(tmp_path):
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python") if not installed(m)]
    if missing:
        pytest.skip(f"mkdocs build needs {', '.join(missing)}: pip install mkdocs-material 'mkdocstrings[python]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                    if "WARNING" in line or "ERROR" in line or "Error" in line)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log or proc.stderr[-4000:]}"
    assert (tmp_path / "site" / "api" / "engine" / "index.html").is_file()
    concepts = (tmp_path / "site" / "concepts" / "index.html").read_text()
    assert 'class="mermaid"' in concepts, "the step-flow diagram is not rendered as a mermaid block"


# ---------------------------------------------------------------- the methods table


def table_rows() -> dict[str, list[str]]:
    rows = {}
    for m in ROW.finditer(METHODS_PAGE.read_text()):
        cells = [c.strip() for c in m.group("rest").split(" | ")]
        rows.setdefault(m.group("name"), cells)
    return rows


def test_every_registered_method_has_a_row():
    rows = table_rows()
    missing = [name for name in sparsetrain.list_methods() if name not in rows]
    assert not missing, (f"docs/methods.md has no table row for {missing}: add one per method (paper, year, "
                         "family, key hyperparameters with defaults, recipe, what was fixed)")


def test_every_row_is_a_registered_method_with_six_cells():
    for name, cells in table_rows().items():
        assert name in sparsetrain.list_methods(), f"docs/methods.md has a row for unknown method {name!r}"
        assert len(cells) == 5 and all(cells), f"row {name!r} needs 6 non-empty cells, got {cells}"


def test_defaults_in_the_table_are_the_builders_defaults():
    checked = 0
    for name, cells in table_rows().items():
        params = method_signature(name).parameters
        for span in SPAN.findall(cells[2]):
            key, sep, value = span.partition("=")
            if not sep or not key.isidentifier():
                continue
            assert key in params, f"{name}: the table names argument {key!r}, the builder has {list(params)}"
            assert ast.literal_eval(value) == params[key].default, (
                f"{name}: the table says {key}={value}, the builder's default is {params[key].default!r}")
            checked += 1
    assert checked >= 2 * len(table_rows())


def test_recipes_in_the_table_exist():
    recipes = set(list_recipes())
    # a span without spaces in the recipe column is a recipe name; commands have spaces
    named = [span for cells in table_rows().values() for span in SPAN.findall(cells[3])
             if re.fullmatch(r"[a-z0-9_]+", span)]
    assert named, "the recipe column names no recipe"
    unknown = sorted(set(named) - recipes)
    assert not unknown, f"docs/methods.md names recipes that do not exist: {unknown}"


# ---------------------------------------------------------------- the other registries


def test_every_command_distribution_and_criterion_is_documented():
    from sparsetrain.cli.commands import COMMANDS
    from sparsetrain.distributions import DISTRIBUTIONS

    cli = (DOCS / "cli.md").read_text()
    missing = [c for c in COMMANDS if f"## sparsetrain {c}\n" not in cli]
    assert not missing, f"docs/cli.md has no section for sparsetrain {missing}"
    concepts = set(SPAN.findall((DOCS / "concepts.md").read_text()))
    missing = [n for n in [*DISTRIBUTIONS, *criteria.list_criteria()] if n not in concepts]
    assert not missing, f"docs/concepts.md does not name the distributions / criteria {missing}"


# ---------------------------------------------------------------- runnable examples


@pytest.mark.parametrize("page", ["guides/one-line.md", "guides/checkpoints.md", "guides/transformers.md"])
def test_page_examples_run(page, one_thread):
    assert run_blocks(DOCS / page), f"{page} has no <!-- run --> python block"
    with registries_restored():
        execute(DOCS / page)


def test_custom_method_page_is_short_and_runs(one_thread):
    blocks = run_blocks(CUSTOM_PAGE)
    assert len(blocks) >= 2
    rule_lines = [line for line in blocks[0].splitlines() if line.strip()]
    assert len(rule_lines) < 30, f"the worked example promises under 30 lines, it has {len(rule_lines)}"
    with registries_restored():
        execute(CUSTOM_PAGE)
    assert "set_unfired" not in sparsetrain.list_methods(), "the page's method leaked out of the test"


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(1, 8, 3, padding=1), nn.Conv1d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


def test_custom_method_trains_and_keeps_exact_density(one_thread):
    """The page's method on another model and optimizer: exact ERK counts after every
    step, zeros and clean Adam state where masks are off, real zero-cost updates,
    never-active weights grown first, a lower loss, and a state_dict that loads."""
    with registries_restored():
        execute(CUSTOM_PAGE)
        torch.manual_seed(1)
        model = ConvNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        x = torch.randn(192, 1, 12)
        y = (x[:, 0, :4].sum(1) > 0).long() + (x[:, 0, 8:].sum(1) > 0).long()
        sparsifier = sparsetrain.attach(model, optimizer, "set_unfired", density=0.3, update_every=8,
                                        total_steps=96, seed=3)
        shapes = {n: m.shape for n, m in sparsifier.masks.items()}
        targets = {n: exact_count(d, shapes[n].numel()) for n, d in layer_densities("erk", shapes, 0.3).items()}
        params = dict(model.named_parameters())
        losses = []
        for step in range(96):
            batch = torch.arange(step * 16, step * 16 + 16) % 192
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            before = {n: m.clone() for n, m in sparsifier.masks.items()}
            ever = {n: m.clone() for n, m in sparsifier.fired.items()}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            for n, mask in sparsifier.masks.items():
                assert int(mask.sum()) == targets[n], f"step {step + 1}, {n}: {int(mask.sum())} != {targets[n]}"
                # a weight that was active before is regrown only once no never-active one is left
                if (mask & ~before[n] & ever[n]).any():
                    assert not (~ever[n] & ~mask).any(), f"step {step + 1}, {n}: grew a used weight before a new one"
                off = ~mask
                assert torch.all(params[n].detach()[off] == 0)
                for value in optimizer.state[params[n]].values():
                    if value.shape == mask.shape:
                        assert torch.all(value[off] == 0), f"step {step + 1}, {n}: optimizer state not masked"
        updates = sparsifier.history[1:]
        assert [u["step"] for u in updates] == list(range(8, 96, 8))  # every(8): the window is half-open
        assert all(u["dropped"] == u["grown"] > 0 for u in updates)
        fresh_growth = sum(int(m.sum()) for m in sparsifier.fired.values()) - sum(targets.values())
        assert fresh_growth > 0.5 * sum(u["grown"] for u in updates), "growth mostly re-used active weights"
        assert sum(losses[-16:]) / 16 < 0.8 * sum(losses[:16]) / 16, f"did not train: {losses[:3]} ... {losses[-3:]}"

        state = sparsifier.state_dict()
        assert set(state["method_state"]["ever"]) == set(shapes)
        buffer = io.BytesIO()  # through bytes, as a checkpoint would
        torch.save(state, buffer)
        buffer.seek(0)
        net = ConvNet()
        fresh = sparsetrain.attach(net, torch.optim.Adam(net.parameters()), "set_unfired", density=0.3,
                                   update_every=8, total_steps=96, seed=3)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        assert all(torch.equal(fresh.masks[n], sparsifier.masks[n]) for n in shapes)


def test_algorithm_section_references_in_the_code_resolve():
    """Docstrings cite docs/algorithms.md by section title; every cited title is a heading there."""
    root = Path(__file__).resolve().parents[1]
    headings = {line.lstrip("#").strip() for line in (root / "docs" / "algorithms.md").read_text().splitlines()
                if line.startswith("#")}
    cited = set()
    for path in (root / "src").rglob("*.py"):
        cited |= {" ".join(title.split())  # a title may wrap across docstring lines
                  for title in re.findall(r'docs/algorithms\.md[,\s(]*"([^"]+)"', path.read_text())}
    assert cited, "no reference found: the pattern is stale"
    assert cited <= headings, f"sections cited but missing from docs/algorithms.md: {sorted(cited - headings)}"


def test_method_pages_cited_in_the_code_exist_and_are_in_the_nav():
    """Docstrings send flag tables to docs/methods/<method>.md: every cited page exists and the site shows it."""
    nav = (ROOT / "mkdocs.yml").read_text()
    cited = {page for path in (ROOT / "src").rglob("*.py")
             for page in re.findall(r"docs/(methods/[a-z0-9_]+\.md)", path.read_text())}
    assert {"methods/chase.md", "methods/granet.md"} <= cited, "the pattern is stale"
    missing = sorted(page for page in cited if not (DOCS / page).is_file())
    assert not missing, f"docstrings cite pages that do not exist: {missing}"
    unlisted = sorted(page for page in cited if f": {page}\n" not in nav)
    assert not unlisted, f"pages missing from the mkdocs.yml nav: {unlisted}"
