"""SNS subscription filter policies: parse, validate, evaluate, and compile to NATS subjects.

Pure: no I/O, no AWS or NATS imports. The planner calls `parse_policy`, `choose_promoted` and
`compile_to_subjects`; the bridge's filter router calls `FilterPolicy.matches` and `subject_for`.

Grammar (AWS SNS developer guide, "Amazon SNS message filtering")
-----------------------------------------------------------------
A policy is a JSON object. Each key names a message attribute (scope ``MessageAttributes``) or
a property of the JSON message body (scope ``MessageBody``, where values may be nested objects
and only the leaf keys count). A leaf value is a non-empty array; the message passes the key
when *any* array entry matches (OR) and passes the policy when *every* key passes (AND).
Array entries are:

    "text"                                 exact string (case-sensitive)
    301.5                                  exact number (compared as a number: 3.015e2 matches)
    true / false / null                    exact literal (body values, String.Array elements)
    {"numeric": ["=", 5]}                  also "<", "<=", ">", ">=", or a range with the lower
    {"numeric": [">", 0, "<=", 150]}         bound first (">"/">=" then "<"/"<=", bottom < top)
    {"anything-but": "x" | 5 | ["x", 5]}   any value except these
    {"anything-but": {"prefix": "x"}}      any value not starting with "x"
    {"prefix": "x"}, {"suffix": "x"}       string prefix / suffix
    {"equals-ignore-case": "x"}            case-insensitive string equality (Unicode casefold)
    {"exists": true | false}               key present / absent
    {"cidr": "10.0.0.0/24"}                string holding an IPv4 or IPv6 address in the network

``"$or": [{...}, {...}]`` ORs whole sub-policies. It is an operator only when its value is an
array of at least two objects none of which uses a match type (``prefix``, ``numeric``...) as a
field name; otherwise ``$or`` is an ordinary key, exactly as AWS documents.
The guide's own illustration of that, ``{"$or": [{"numeric": 123}, {"prefix": "abc"}]}``, is
then an ordinary key whose ``numeric`` entry is not an array, so we reject it as SNS's grammar
requires (``{"numeric": ["=", 123]}`` is the valid spelling).

Rejected as SNS rejects them: malformed JSON, a non-object policy, ``wildcard`` and any other
unknown match type, ``anything-but`` with ``suffix``/``exists``/anything but ``prefix``, an
``anything-but`` list mixing strings and numbers, an empty ``anything-but`` prefix, a ``cidr``
with a /32 (IPv4) or /128 (IPv6) mask (see "Decisions" below), match objects with more than one
key, empty arrays, nested objects in attribute scope, numbers outside ±10^9, more than 5 keys
(leaf keys; counted per ``$or`` alternative, the reading most permissive to policies that
already live in AWS) and more than 150 combinations. Combinations follow AWS's
documented arithmetic: the product, over leaf keys, of ``len(values) * depth`` (top level is
depth 1, so the nested example gives 3 x 4 x 2 x 3 = 72), and ``$or`` alternatives add up.
Numbers keep five decimals (AWS's stated accuracy): they are compared as integers scaled by 10^5.

Decisions
---------
Three policies were accepted here although AWS's own matching library (aws/event-ruler, whose
errors SNS returns) refuses them; public test suites that recorded real AWS answers agree with
that library. Each is now rejected with a FilterPolicyError naming the key and what to write
instead. A policy SNS refuses can never be live on a subscription, so rejecting costs no
migration, while accepting would let the filter router run a policy SNS never ran.

(a) ``anything-but`` with a list mixing strings and numbers (``{"anything-but": ["x", 1]}``):
    rejected. The guide documents string lists (string-value-matching.html, "Anything-but
    matching") and number lists (numeric-value-matching.html, "Anything-but matching"), never
    a mix; the library refuses it ("Inside anything but list, either all values are number or
    string, mixed type is not supported"). Keep one type: a value of the other type passes
    ``anything-but`` anyway.
(b) ``anything-but`` with an empty ``prefix`` (``{"anything-but": {"prefix": ""}}``): rejected.
    Every value starts with "", so it could match nothing; the guide's form is a non-empty
    prefix to deny ("Using a prefix with the anything-but operator": ``"order-"``) and the
    library refuses it ("Null prefix/suffix not allowed").
(c) ``cidr`` with a /32 (IPv4) or /128 (IPv6) mask: rejected. The guide's IP address matching
    ("check whether an incoming message originates from a specific IP address or subnet",
    example ``10.0.0.0/24``) gives no mask limit, but the library's parser refuses them ("IPv4
    mask bits must be < 32", "IPv6 mask bits must be < 128"). /31 and /127 are accepted; for one
    address use the exact string (``"10.0.0.1"``), which SNS compares as written.

Evaluation semantics
--------------------
* A key the policy names but the message lacks fails every entry except ``{"exists": false}``.
* Attribute types matter. ``String`` (and custom ``String.x``) values meet string entries,
  ``Number`` (and ``Number.x``) values meet numeric entries only, ``String.Array`` values are
  JSON arrays whose elements each meet the entries of their own JSON type (a JSON scalar such
  as ``"100"`` is a one-element array, as SNS delivers it), and ``Binary``
  attributes are ignored entirely (they count as absent, also for ``exists``).
* ``anything-but`` matches a value of another type (a number is "anything but" ``"x"``).
* Body scope needs a JSON object body; anything else matches only the empty policy. Arrays
  match when any element matches. Like AWS, a dotted policy key ``"a.b"`` also reaches the
  nested ``{"a": {"b": ...}}``; an empty array or an object counts as no value at that key.
* AWS's docs conflict on ``anything-but`` against a ``String.Array``: the older example says
  ``["rugby", "baseball"]`` passes ``{"anything-but": ["rugby", "tennis"]}`` (some element is
  not listed), a 2025 revision says it passes only if *no* element is listed. We follow the
  element-wise rule, which is the same "any element matches" rule every other operator uses and
  what the documented example shows; the bridge's router therefore agrees with the older text.

Subject token encoding
----------------------
``encode_token`` turns an attribute value into one NATS subject token:

* a non-empty value made only of ``[A-Za-z0-9_-]`` is its own token (``created`` -> ``created``);
* otherwise every other character is written as its UTF-8 bytes, each ``~`` + two uppercase hex
  digits (``order.placed`` -> ``order~2Eplaced``, ``café`` -> ``caf~C3~A9``, ``~`` -> ``~7E``);
* the empty string is ``~empty`` and an absent attribute (``None``) is ``~absent``.

A ``~`` in a real value's token is always followed by two uppercase hex digits, so the markers
(``~`` + a lowercase word) never collide with a value, and ``decode_token`` inverts
``encode_token`` exactly (it rejects any non-canonical spelling, which keeps the map injective).
Tokens are printable ASCII without ``.``, ``*``, ``>`` or whitespace. `subject_for` writes a
``Number``, ``String.Array`` or other non-string value as ``~typed``, a token no value filter
selects and only ``*`` matches; ``Binary`` is written as ``~absent``, as evaluation ignores it.

Compiling to JetStream filter subjects
--------------------------------------
Subjects are ``<prefix>.<tok(a1)>.<tok(a2)>...``, one token per promoted attribute in order.
A policy compiles when, for every ``$or`` alternative, each key is promoted and each entry is an
exact string (-> that value's token) or ``{"exists": false}`` (-> ``~absent``). Unconstrained
positions become ``*``. The subjects are made non-overlapping (JetStream refuses overlapping
``filter_subjects``) by dropping subjects covered by another; alternatives that still overlap
cannot be expressed. Everything else is reported with a precise reason and left to the bridge's
filter router: body scope, numbers and literals, numeric comparisons, prefix, suffix,
equals-ignore-case, cidr, anything-but, and ``exists: true`` (``*`` would also match
``~absent``).

Assumption: promoted attributes carry ``String`` values. Exact string entries also match
elements of a ``String.Array``, which one token cannot represent, so publishers (and the
bridge) must promote only ``String`` attributes; a ``String.Array`` on a promoted attribute is
written as ``~typed`` and would be missed by the compiled filters. A ``Number`` written as
``~typed`` is exact: string entries never match numbers.

moto
----
moto 5's ``FilterPolicyMatcher`` is a second opinion in the tests, not a reference. It differs
from the AWS guide (and from us) on: ``equals-ignore-case`` with an upper-case pattern (it
lowercases only the message), ``cidr`` (unsupported), ``anything-but`` on a ``String.Array``
whose elements are all excluded (it passes), custom ``Number.x`` types, ``exists`` on
``Binary`` attributes, ``$or`` in body scope, dotted body keys, and ``false``/``null`` literals.

Plain headers
-------------
A NATS producer's header carries no data type. `plain` types it: a String, except a value
that parses as a number where a policy of the topic compares that attribute as a number
(SNS's Number type); see `PLAIN_HEADER_RULE`. Recorded types (AWS-relayed messages) are kept.

Layout: `model` (values, attributes, parsed entries), `policy` (grammar and validation),
`match` (the compiled matcher), `subjects` (tokens, compiling, choosing promoted attributes),
`plain` (typing headers a NATS producer wrote).
"""

from snsq2nats.filterpolicy.model import KeyRule, MessageAttribute, Numeric, Scope
from snsq2nats.filterpolicy.plain import RULE as PLAIN_HEADER_RULE
from snsq2nats.filterpolicy.plain import Problem, numeric_keys, type_plain
from snsq2nats.filterpolicy.policy import (
    MAX_COMBINATIONS,
    MAX_KEYS,
    FilterPolicy,
    matches,
    parse_policy,
)
from snsq2nats.filterpolicy.subjects import (
    ABSENT_TOKEN,
    EMPTY_TOKEN,
    TYPED_TOKEN,
    CompileResult,
    choose_promoted,
    compile_to_subjects,
    decode_token,
    encode_token,
    subject_for,
)

__all__ = [
    "ABSENT_TOKEN",
    "EMPTY_TOKEN",
    "MAX_COMBINATIONS",
    "MAX_KEYS",
    "PLAIN_HEADER_RULE",
    "TYPED_TOKEN",
    "CompileResult",
    "FilterPolicy",
    "KeyRule",
    "MessageAttribute",
    "Numeric",
    "Problem",
    "Scope",
    "choose_promoted",
    "compile_to_subjects",
    "decode_token",
    "encode_token",
    "matches",
    "numeric_keys",
    "parse_policy",
    "subject_for",
    "type_plain",
]
