"""The package's import structure, read from its source (ast, nothing imported):

- no import cycle anywhere, function-level imports included (imports under
  ``if TYPE_CHECKING:`` excepted);
- imports go one way: core <- AutoRound glue <- llm-compressor glue; the core
  imports no glue, the AutoRound glue no llm-compressor glue;
- the hosts' private names appear only in their seams modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vsraq_modifier"
AUTOROUND = "vsraq_modifier.integrations.autoround"
LLMC = "vsraq_modifier.integrations.llmcompressor"
#: application modules (commands, entry points): they may import any layer
APPS = ("vsraq_modifier.cli", "vsraq_modifier.autoround", "vsraq_modifier.runs")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The package module that ``import name`` loads last (longest match)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    package = (
        module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    )
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    root = package.split(".")
                    root = root[: len(root) - (child.level - 1)]
                    base = ".".join([*root, base] if base else root)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in MODULES else base)
            visit(child)

    visit(tree)
    out = {_resolve(n) for n in found if n.startswith("vsraq_modifier")}
    return {m for m in out if m and m != module}


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> str:
    if module.startswith(APPS):
        return "app"
    if module.startswith(LLMC):
        return "llmcompressor"
    if module.startswith(AUTOROUND):
        return "autoround"
    if module == "vsraq_modifier":
        return "app"  # the package root resolves names lazily
    return "core"


def test_the_graph_is_read() -> None:
    assert (
        "vsraq_modifier.session"
        in GRAPH["vsraq_modifier.integrations.autoround.quantizer"]
    )
    assert len(MODULES) > 40


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module)


ALLOWED = {
    "core": {"core"},
    "autoround": {"core", "autoround"},
    "llmcompressor": {"core", "autoround", "llmcompressor"},
    "app": {"core", "autoround", "llmcompressor", "app"},
}


def test_imports_go_one_way() -> None:
    wrong = [
        f"{m} ({_layer(m)}) imports {d} ({_layer(d)})"
        for m, deps in GRAPH.items()
        for d in deps
        if _layer(d) not in ALLOWED[_layer(m)]
    ]
    assert not wrong, "\n".join(wrong)


#: private host names -> the only module allowed to name them
PRIVATE = {
    AUTOROUND + ".seams": [
        "_ENTRY_KWARG_OWNERS",
        "_SCHEME_FIELDS",
        "_SIGNROUND_FIELDS",
        "_get_loss",
        "_offloader",
        "_count_samples",
        "_cached_valid_token_mask",
        "_compute_valid_token_mask",
        "_user_set_scheme_fields",
        "WrapperMultiblock",
        ".orig_layer.",
    ],
    LLMC + ".seams": [
        "_registered_registry",
        "_CALIBRATE_ALL_EXPERTS",
        "_all_module_input",
        "_tmp_name",
        "_is_decoding_layer",
        "_update_device_map_for_dp",
    ],
    "vsraq_modifier.transformers_seams": [
        "_attn_implementation",
        "_checkpoint_conversion_mapping_cache",
    ],
}


@pytest.mark.parametrize("owner", sorted(PRIVATE))
def test_private_host_names_only_in_their_seams_module(owner: str) -> None:
    pattern = re.compile("|".join(re.escape(n) for n in PRIVATE[owner]))
    found = [
        f"{m}: {sorted(set(pattern.findall(MODULES[m].read_text())))}"
        for m in MODULES
        if m != owner and pattern.search(MODULES[m].read_text())
    ]
    assert not found, "\n".join(found)
    assert pattern.search(MODULES[owner].read_text())
