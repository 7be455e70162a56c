"""The target line every benchmark prints and `report.py` reads into its summary.

>>> target_line("int8 / SavedModel latency", "0.24x", "<= 0.5x", True)
'- int8 / SavedModel latency: 0.24x (target <= 0.5x): met'
"""


def target_line(what, measured, target, met):
    """`- <what>: <measured> (target <target>): met` (or `NOT met`); `measured` has no colon."""
    return f"- {what}: {measured} (target {target}): {'met' if met else 'NOT met'}"
