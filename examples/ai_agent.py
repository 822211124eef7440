"""AI agent: reads a folder, asks a language model for a structured briefing, writes it to a file.

It works with any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server), named by
environment variables::

    export REPRISE_OPENAI_MODEL=gpt-4o-mini             # required: the model name
    export OPENAI_API_KEY=sk-...                        # required for OpenAI itself
    export REPRISE_OPENAI_BASE_URL=http://127.0.0.1:11434/v1   # optional: another server
    python -m examples.ai_agent                          # the sample notes; runs under ./runs
    python -m examples.ai_agent --folder ~/notes --run-root /tmp/runs

The agent's one flow has five nodes:

* ``scan`` (:class:`FolderAnalyzerNode`) lists the folder (respecting ``.gitignore``) and reads
  the text of its files, within size and word limits;
* ``digest`` turns the listing into prompt text;
* ``brief`` (:class:`AIModelNode`) sends it to the model (``$hier{digest}`` in its prompt) and gets a
  :class:`Briefing` back (structured output); its token usage and cost are in its
  ``result.json``, and GenAI spans in ``.trace/trace.jsonl``;
* ``render`` turns the briefing into Markdown file operations;
* ``write`` (:class:`FileOperationNode`) writes ``briefing.md`` into its node directory, with a
  diff, and declares it an outcome file of the run.

The API key is read from the environment and never written to the run directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reprise import FlowDefinition, FlowRunner, Initial, Ref, RepriseError, RunContext, RunResult
from reprise.nodes import AIModelNode, FileChanges, FileOperationNode, FolderAnalysis, FolderAnalyzerNode

__all__ = ["Briefing", "EndpointSettings", "build_flow", "endpoint_from_env", "main"]

SAMPLE_FOLDER = Path(__file__).resolve().parent / "data" / "notes"
ROOT_ID = "ai_agent"


class Briefing(BaseModel):
    """What the model is asked for."""

    title: str
    summary: str
    action_items: list[str]
    open_questions: list[str]


class EndpointSettings(BaseModel):
    """The endpoint, from ``REPRISE_OPENAI_MODEL``, ``REPRISE_OPENAI_BASE_URL``, ``OPENAI_API_KEY``."""

    model: str
    base_url: str | None


MISSING_CONFIGURATION = """\
error: no model endpoint is configured. Set:
  REPRISE_OPENAI_MODEL      the model name, e.g. gpt-4o-mini or llama3.1 (required)
  OPENAI_API_KEY            the API key (required for OpenAI; local servers usually take any value)
  REPRISE_OPENAI_BASE_URL   an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 for Ollama
                            (optional; default: OpenAI)"""


def endpoint_from_env() -> EndpointSettings | str:
    """The endpoint settings, or the message that says what is missing."""
    model = os.environ.get("REPRISE_OPENAI_MODEL", "").strip()
    base_url = os.environ.get("REPRISE_OPENAI_BASE_URL", "").strip() or None
    if not model:
        return MISSING_CONFIGURATION
    if base_url is None and not os.environ.get("OPENAI_API_KEY"):
        return MISSING_CONFIGURATION.replace("no model endpoint is configured", "OPENAI_API_KEY is not set")
    return EndpointSettings(model=model, base_url=base_url)


def digest(scan: FolderAnalysis) -> str:
    """The folder as prompt text: its tree, then each file's text."""
    parts = ["Files:", scan.tree]
    parts += [f"\n## {f.path}\n{f.content}" for f in scan.files if f.content]
    return "\n".join(parts)


def to_markdown(briefing: Briefing) -> list[dict[str, Any]]:
    """The file operations that write the briefing as ``briefing.md``."""
    lines = [f"# {briefing.title}", "", briefing.summary, "", "## Action items", ""]
    lines += [f"- {item}" for item in briefing.action_items] or ["- (none)"]
    lines += ["", "## Open questions", ""]
    lines += [f"- {q}" for q in briefing.open_questions] or ["- (none)"]
    return [{"op": "create", "path": "briefing.md", "content": "\n".join(lines) + "\n", "overwrite": True}]


def build_flow(endpoint: EndpointSettings) -> FlowDefinition:
    """The agent's flow for ``endpoint``."""
    brief = AIModelNode(
        provider="openai",
        model=endpoint.model,
        base_url=endpoint.base_url,
        system="You read a person's notes and write a short, factual briefing. Do not invent facts.",
        prompt=(
            "Here are a person's notes.\n\n$hier{digest}\n\n"
            "Write a briefing: a title, a summary of a few sentences, the action items and the open questions."
        ),
        output=Briefing,
        temperature=0.2,
        max_tokens=1200,
        timeout=120,
        retries=3,
    )
    return (
        FlowDefinition(ROOT_ID, description="Brief a folder of notes with a language model")
        .node(
            "scan",
            FolderAnalyzerNode(include_contents=True, max_file_bytes=8_000, max_total_content_bytes=60_000),
            inputs={"root": Initial("folder")},
        )
        .node("digest", digest, inputs=Ref("scan"))
        .node("brief", brief)
        .node("render", to_markdown, inputs=Ref("brief"))
        .node("write", FileOperationNode(), inputs={"operations": Ref("render")})
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent; 0 on success, 1 if the run failed, 2 if nothing is configured."""
    parser = argparse.ArgumentParser(prog="python -m examples.ai_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=SAMPLE_FOLDER, help="the folder to brief")
    parser.add_argument("--run-root", type=Path, default=None, help="where runs go (default ./runs)")
    args = parser.parse_args(argv)
    endpoint = endpoint_from_env()
    if isinstance(endpoint, str):
        print(endpoint, file=sys.stderr)
        return 2
    ctx = RunContext(
        root_component_id=ROOT_ID,
        project_root=Path.cwd(),
        run_root=args.run_root,
        initial_inputs={"folder": str(args.folder.resolve())},
    )
    try:
        result: RunResult = FlowRunner(build_flow(endpoint), ctx).run_sync()
    except RepriseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if ctx.run_dir is not None:
            print(f"run directory: {ctx.run_dir.path}", file=sys.stderr)
        return 1
    assert isinstance(result.outcome, FileChanges)
    print(f"run directory: {result.run_dir}")
    print(f"briefing:      {result.run_dir / ROOT_ID / 'write' / 'briefing.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
