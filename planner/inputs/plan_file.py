"""overmount-plan/1 JSON files, as check, run --plan and recover read them: every step checked
against the plan format (planner.steps), errors naming the file and the step's line."""

from __future__ import annotations

from planner import limits
from planner.dump import DUMP_FORMAT
from planner.errors import DumpError
from planner.inputs.source import decode, json_element_lines, key_line, load_json, read_input
from planner.steps import FORMAT, Step, step_from_json


def load_plan(path: str) -> list[Step]:
    source, data = read_input(path)
    text = decode(data, source)
    make_one = "overmount plan DUMP --format json -o PLAN"
    if not text.lstrip().startswith(("{", "[")):  # the text or shell rendering: people's, not a plan file
        raise DumpError(source, 1, f"not a JSON plan: PLAN is {FORMAT} JSON ({make_one})")
    raw = load_json(text, source)
    if not isinstance(raw, dict):
        raise DumpError(source, 1, f"expected a {FORMAT} object")
    if raw.get("format") != FORMAT:
        hint = f": that is a dump; its plan comes from {make_one}" if raw.get("format") == DUMP_FORMAT else ""
        raise DumpError(source, key_line(text, "format"), f"format must be {FORMAT!r}, got {raw.get('format')!r}{hint}")
    if not isinstance(raw.get("steps"), list):
        raise DumpError(source, key_line(text, "steps"), "'steps' must be a list")
    if len(raw["steps"]) > limits.STEPS.value:
        raise DumpError(source, key_line(text, "steps"), limits.STEPS.refusal(f"{len(raw['steps']):,} steps"))
    lines = json_element_lines(text, "steps")
    steps = []
    for index, item in enumerate(raw["steps"]):
        try:
            steps.append(step_from_json(item))
        except ValueError as err:
            raise DumpError(source, lines[index] if index < len(lines) else None, f"step {index}: {err}") from None
    moves = sum(1 for s in steps if s.op == "move-aside")
    if "moves" in raw and raw["moves"] != moves:
        raise DumpError(source, key_line(text, "moves"), f"'moves' says {raw['moves']!r}, the steps hold {moves} move-asides")
    return steps


