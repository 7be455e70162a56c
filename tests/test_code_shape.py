"""The package's shape, checked by reading its source (ast), never by importing it.

* No function or method is longer than `MAX_FUNCTION_LINES` lines of code.
* No two of the package's modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize

PACKAGE = "keras_preact"
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent / PACKAGE
MAX_FUNCTION_LINES = 60

_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (*_FUNCTIONS, ast.ClassDef, ast.Module)


def _source_files():
    return sorted(PACKAGE_DIR.rglob("*.py"))


def _relative(path):
    return path.relative_to(PACKAGE_DIR.parent).as_posix()


def _code_lines(source):
    """Line numbers holding a token other than a comment (a string's every line counts)."""
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def _docstring_lines(tree):
    """Line numbers of the module's, classes' and functions' docstrings."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, _SCOPES) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def _long_functions(path, limit):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    code = _code_lines(source) - _docstring_lines(tree)
    for node in ast.walk(tree):
        if isinstance(node, _FUNCTIONS):
            count = sum(1 for line in range(node.lineno, node.end_lineno + 1) if line in code)
            if count > limit:
                yield f"{_relative(path)}:{node.lineno} {node.name} ({count} lines)"


def test_no_function_over_60_lines_of_code():
    """Every function and method (nested ones too) has at most 60 lines of code.

    A function's lines run from its `def` line to its last line (a nested
    function's lines count in the enclosing one too). Lines of code are those
    with a token other than a comment: blank lines, comment-only lines and
    docstrings (of the function and of anything nested in it) are not counted;
    every line of any other multi-line string is.
    """
    offenders = [
        offender
        for path in _source_files()
        for offender in _long_functions(path, MAX_FUNCTION_LINES)
    ]
    assert not offenders, (
        f"Functions over {MAX_FUNCTION_LINES} lines of code (split them into helpers):\n"
        + "\n".join(offenders)
    )


def _module_name(path):
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path):
    return path.name == "__init__.py"


def _imported_modules(tree, module, is_package, modules):
    """The package's modules that `module` imports, at module level or inside functions.

    `from a.b import c` imports the module `a.b.c` where that is one of the
    package's modules, else `a.b`. Relative imports are resolved against
    `module`'s package.
    """
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in modules:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in modules else source


def _import_graph():
    paths = {_module_name(path): path for path in _source_files()}
    graph = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set(_imported_modules(tree, module, _is_package(path), paths))
    return graph


def _strongly_connected_components(graph):
    """Tarjan's algorithm: the graph's strongly connected components, each a sorted list."""
    index, lowlink, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node):
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles_among_package_modules():
    """No module of the package imports itself, directly or through the others.

    The graph has an edge for every import of one of the package's modules
    (module-level and function-local): `import keras_preact` to the package,
    `from keras_preact.x import y` to `keras_preact.x.y` where that is a module
    (a file or a package), else to `keras_preact.x`. The implicit import of a
    module's parent packages is not an edge.
    """
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(_strongly_connected_components(toy)) == [["a", "b", "c"], ["d"], ["e"]]

    graph = _import_graph()
    cycles = []
    for component in _strongly_connected_components(graph):
        if len(component) > 1:
            members = set(component)
            edges = "; ".join(
                f"{module} imports {', '.join(sorted(graph[module] & members))}"
                for module in component
            )
            cycles.append(f"{' <-> '.join(component)}\n  ({edges})")
    cycles += [f"{module} imports itself" for module, targets in graph.items() if module in targets]
    assert not cycles, "Import cycles among the package's modules:\n" + "\n".join(sorted(cycles))
