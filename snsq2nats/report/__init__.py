"""Everything people read; the engines only return data.

format.py    how values read everywhere: durations, sizes, field values, ARNs, URLs, routes
facts.py     what every plan output says (summary, changes in order, findings), computed once
terminal.py  the scan and the plan as rich renderables for a terminal
markdown.py  the plan for a pull request
html.py      the plan as one self-contained page
document.py  `plan --report FILE.md|FILE.html`: the format follows the file name
apply.py     what apply did, object by object, and its one-line summary
verify.py    verify's results table and verdict line
status.py    the bridge routes' backlog table and drained line
live.py      the bridge's live view (a rich table on a terminal, plain lines otherwise)
"""
