"""``ParameterHistory``: every version of the parameters, committed to the outcome repository.

Each commit is a reprise run of a small flow with one node per parameter, whose outcome is the
parameter's text (also declared as the file ``value.txt``, so diffs are line by line). Each run is
a re-run of the one before, so its commit has the previous commit as parent and
``git log -p run/<last run> -- <root>/<parameter>/value.txt`` shows how a prompt evolved, with
the feedback behind each change in the commit messages (the run's ``commit_note``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio

from reprise import FlowDefinition, FlowRunner, Initial, NodeContext, RunContext, RunResult, node
from reprise.optim._errors import OptimizationError

__all__ = ["ParameterHistory", "node_id"]


def node_id(name: str) -> str:
    """The node id for a parameter's dotted name (``classifier.system`` -> ``classifier__system``)."""
    return name.replace(".", "__")


@node
async def parameter_value(value: str, ctx: NodeContext) -> str:
    """The parameter's text, also written to ``value.txt`` and declared as an outcome file."""
    path = ctx.node_dir / "value.txt"
    path.write_text(value if value.endswith("\n") else value + "\n", encoding="utf-8")
    ctx.declare_outcome_file(path)
    return value


class ParameterHistory:
    """Commits parameter values as runs of the flow ``root`` under ``project_root`` (and
    ``run_root``, default ``project_root/runs``). ``runs`` lists the run ids, oldest first."""

    def __init__(
        self, project_root: Path | str, *, run_root: Path | str | None = None, root: str = "parameters"
    ) -> None:
        self.project_root = Path(project_root)
        self.run_root = Path(run_root) if run_root is not None else self.project_root / "runs"
        self.root = root
        self.runs: list[str] = []
        self._names: tuple[str, ...] = ()

    @property
    def branch(self) -> str | None:
        """The git branch of the latest version (``run/<run id>``), or ``None`` before the first."""
        return f"run/{self.runs[-1]}" if self.runs else None

    def file_path(self, name: str) -> str:
        """Where parameter ``name``'s text is in the repository's tree."""
        return f"{self.root}/{node_id(name)}/value.txt"

    def commit(self, values: Mapping[str, object], note: str) -> RunResult:
        """Commit ``values`` (parameter name to value) with ``note`` in the commit message."""
        return anyio.run(self.acommit, values, note)

    async def acommit(self, values: Mapping[str, object], note: str) -> RunResult:
        """:meth:`commit` for async code."""
        names = tuple(values)
        flow = FlowDefinition()
        for name in names:
            flow.node(node_id(name), parameter_value, inputs={"value": Initial(node_id(name))})
        previous = self.runs[-1] if self.runs and names == self._names else None
        ctx = RunContext(
            root_component_id=self.root,
            project_root=self.project_root,
            run_root=self.run_root,
            previous_run_id=previous,
            start_hierarchy_path=f"{self.root}.{node_id(names[0])}" if previous else None,
            initial_inputs={node_id(n): str(v) for n, v in values.items()},
            commit_note=note,
        )
        result = await FlowRunner(flow, ctx).run()
        if not result.ok:
            raise OptimizationError(f"could not commit the parameters (run {result.run_id}): {result.error}")
        self.runs.append(result.run_id)
        self._names = names
        return result
