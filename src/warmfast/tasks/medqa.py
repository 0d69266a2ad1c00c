"""MedQA vignettes rewritten as first-person questions about a relative (PROTOCOL section 4).

"A 21-year-old college student comes to the physician ... Which of the following is the most
likely diagnosis?" -> "My brother, 21, a college student, comes to the physician ... What is the
most likely diagnosis?". The study's regexes are unpublished; these are warmfast's own:

1. Opening: the first sentence's "a/an [modifiers] <age>-<unit>-old [modifiers] <person noun>
   [post-modifiers] <verb>", at the very start or after one leading clause ending in a comma
   ("Two days after surgery, a 68-year-old woman develops ..."). The age phrase and noun become
   "My <relative>, <age>," (months/weeks/days: "3 months old"); other modifiers stay as an
   appositive ("a college student", "previously healthy", "at 30 weeks' gestation"); the verb
   and the rest of the text are unchanged.
2. Sex: the noun (man, woman, boy, girl, male, female, ...) or pregnancy words, else the
   pronouns of the whole vignette (he/his/him vs she/her) when only one side occurs, or one side
   outnumbers the other 3 to 1.
3. Relative: a seeded choice, rng_for(seed, "medqa-relative", key), among `RelativeTable`'s
   relatives for that sex and age band; husband/wife is skipped when the text names the
   patient's wife/husband, son/daughter when it names the patient's mother/father/parents.
4. Question: "Which of the following <nouns> is ..." -> "Which <noun> is ..."; "Which (one) of
   the following" -> "What"; "Of the following, which" -> "Which". Options are never shown.

An item is reported unconvertible (never half-rewritten) when: no such opening (research and
population vignettes, newborns delivered "to a 29-year-old woman"), the sex cannot be told,
the question still refers to the options ("all of the following", "EXCEPT", "answer choices")
or the answer does ("All of the above", "Both A and B").

Public API:
    RelativeTable                       relatives by sex and age band (config value)
    MedQAConversion                     result: ok, question, relative, sex, age, reason
    convert_question(text, key, seed, table=RelativeTable(), answer=None) -> MedQAConversion
    rewrite_which_of_the_following(text) -> str
    convert_items(items, seed, on_unconvertible="drop", table=RelativeTable())
        -> (list[Item], list[MedQAConversion])   the second list: every unconvertible item
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from .item import Item, TaskDataError
from .seeding import rng_for

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_VERBS = ("is|was|are|has|had|presents|presented|comes|came|arrives|arrived|visits|visited|returns|"
          "returned|develops|developed|undergoes|underwent|complains|complained|reports|reported|seeks|"
          "sought|consults|calls|called|appears|appeared|experiences|experienced|sustains|sustained|"
          "brings|delivers|dies|died|starts|started|begins|began|goes|went|attends|requests|asks|asked|"
          "wants|describes|notices|noticed|notes|receives|received|collapses|collapsed|falls|fell|"
          "faints|fainted|suffers|suffered|takes|took|needs|becomes|became|gives|gave|enters|entered|"
          "wishes|states|says|tells|follows|schedules|discovers|finds|learns|walks|walked|contacts|"
          "telephones|phones|is brought|awakens|wakes|woke|recovers|recovered|drinks|eats|uses")
_PERSON = {  # noun -> sex (None: say nothing about sex)
    "man": "male", "men": "male", "boy": "male", "male": "male", "gentleman": "male", "father": "male",
    "husband": "male", "son": "male", "woman": "female", "girl": "female", "female": "female",
    "lady": "female", "mother": "female", "wife": "female", "daughter": "female",
    "primigravida": "female", "multigravida": "female", "primipara": "female",
    "patient": None, "student": None, "infant": None, "newborn": None, "neonate": None, "child": None,
    "toddler": None, "baby": None, "adolescent": None, "teenager": None, "teen": None, "athlete": None,
    "veteran": None, "nurse": None, "physician": None, "immigrant": None, "refugee": None,
    "runner": None, "worker": None, "farmer": None, "soldier": None, "executive": None,
    "businessman": "male", "fisherman": "male", "policeman": "male", "sportsman": "male",
    "businesswoman": "female", "housewife": "female", "waitress": "female", "actress": "female",
    "gravida": "female", "driver": None, "mechanic": None, "zookeeper": None, "player": None,
    "anthropologist": None, "teacher": None, "engineer": None, "lawyer": None, "accountant": None,
    "carpenter": None, "painter": None, "musician": None, "dancer": None, "swimmer": None,
    "cyclist": None, "hiker": None, "climber": None, "missionary": None, "volunteer": None,
    "traveler": None, "pilot": None, "firefighter": None, "officer": None, "chef": None, "cook": None,
    "waiter": None, "writer": None, "artist": None, "scientist": None, "researcher": None,
    "professor": None, "graduate": None, "recruit": None, "marine": None, "sailor": None,
    "hunter": None, "gardener": None, "plumber": None, "electrician": None, "welder": None,
    "miner": None, "laborer": None, "janitor": None, "cashier": None, "secretary": None,
    "homemaker": None, "retiree": None, "smoker": None, "individual": None, "person": None,
    "adult": None, "client": None, "donor": None, "bodybuilder": None, "wrestler": None,
    "boxer": None, "golfer": None, "gymnast": None, "backpacker": None, "salesman": "male",
    "construction": None, "employee": None, "resident": None, "vegetarian": None, "vegan": None,
}
_GRAVIDA = re.compile(r"^(G\d+P\d+|gravida|primigravid|multigravid)$", re.IGNORECASE)
_POST_WORDS = {"with", "who", "from", "at", "in", ",", "whose", "on", "after", "without"}
_PLAIN_HEADS = {"man", "men", "boy", "girl", "male", "female", "gentleman", "lady", "woman", "patient",
                "child", "infant", "newborn", "neonate", "baby", "toddler"}
_AGE = r"(?P<age>\d+|" + "|".join(_NUMBER_WORDS) + r")"
_OPENING = re.compile(
    r"\b(?P<art>[Aa]n?)\s+(?P<pre>(?:[A-Za-z][\w'’-]*,?\s+){0,3}?)" + _AGE
    + r"[\s-]*(?P<unit>year|month|week|day|hour)s?[\s-]old\b(?P<np>[^.;:?]*?)\s+(?P<verb>" + _VERBS + r")\b")
_OPENING_NO_AGE = re.compile(r"^(?P<art>An?)\s+(?P<pre>)(?P<np>man|woman|boy|girl|patient)\s+(?P<verb>" + _VERBS + r")\b")
_OPTION_WORDING = re.compile(
    r"\b(?i:of the following|which of these|answer choices?|choices? below|options? below|the options|"
    r"all of the above|none of the above|which (?:option|choice|answer|statement|response)s?)\b"
    r"|\bEXCEPT\b|:\s*$")
_OPTION_ANSWER = re.compile(r"\b(?:all|none|both) of the above\b|^\s*both [A-E] and [A-E]\b|^\s*[A-E] and [A-E]\s*$",
                            re.IGNORECASE)


@dataclass(frozen=True)
class RelativeTable:
    """Relatives by sex for each age band: child (< 13 years, or an age in months/weeks/days),
    teen (13-17), young (18-39), middle (40-64), old (65+)."""

    male: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "child": ("son", "nephew", "grandson"), "teen": ("son", "nephew", "brother"),
        "young": ("brother", "husband", "son"), "middle": ("husband", "brother", "father"),
        "old": ("father", "grandfather", "husband")})
    female: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "child": ("daughter", "niece", "granddaughter"), "teen": ("daughter", "niece", "sister"),
        "young": ("sister", "wife", "daughter"), "middle": ("wife", "sister", "mother"),
        "old": ("mother", "grandmother", "wife")})

    def __post_init__(self) -> None:
        for sex, table in (("male", self.male), ("female", self.female)):
            for band in ("child", "teen", "young", "middle", "old"):
                if not table.get(band):
                    raise TaskDataError(f"RelativeTable.{sex} lacks relatives for age band {band!r}")


@dataclass(frozen=True)
class MedQAConversion:
    """ok: the rewrite succeeded; question: the rewrite (the source text when not ok);
    reason: why not (empty when ok)."""

    key: str
    ok: bool
    question: str
    relative: str | None = None
    sex: str | None = None
    age: str | None = None
    reason: str = ""


def _band(age: int | None, unit: str | None) -> str:
    if unit in ("month", "week", "day", "hour"):
        return "child"
    if age is None:
        return "young"
    return "child" if age < 13 else "teen" if age < 18 else "young" if age < 40 else "middle" if age < 65 else "old"


def _singular(noun: str) -> str:
    if noun.endswith("ies"):
        return noun[:-3] + "y"
    if noun.endswith(("oses", "yses")):
        return noun[:-2] + "is"
    if noun.endswith(("sses", "shes", "ches", "xes", "zes")):
        return noun[:-2]
    if noun.endswith("uses") and noun not in ("causes", "muses"):
        return noun[:-2]  # viruses -> virus
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun


def rewrite_which_of_the_following(text: str) -> str:
    """'Which of the following drugs is' -> 'Which drug is'; 'which (one) of the following' ->
    'what' (case kept); 'Of the following, which' -> 'Which'."""
    text = re.sub(r"\b([Ww])hich of the following (?!(?:is|was|has|does|best|most)\b)(\w+s)\s+(is|was|has|does|best|most)\b",
                  lambda m: f"{m.group(1)}hich {_singular(m.group(2))} {m.group(3)}", text)
    text = re.sub(r"\b([Ww])hich (?:one )?of the following\b", lambda m: "What" if m.group(1) == "W" else "what", text)
    text = re.sub(r"\b([Oo])f the following, which\b", lambda m: "Which" if m.group(1) == "O" else "which", text)
    return text


def _sex(text: str, np_words: list[str], head: str) -> str | None:
    for w in [head, *np_words]:
        if _PERSON.get(w.lower()):
            return _PERSON[w.lower()]
    if re.search(r"\b(pregnan\w*|gestation|gravida|primigravid|postpartum|menstrua\w*)\b", text, re.IGNORECASE):
        return "female"
    he = len(re.findall(r"\b(he|his|him|himself)\b", text, re.IGNORECASE))
    she = len(re.findall(r"\b(she|her|hers|herself)\b", text, re.IGNORECASE))
    if he and not she or he >= 3 * max(she, 1) and she:
        return "male"
    if she and not he or she >= 3 * max(he, 1) and he:
        return "female"
    return None


def _fail(key: str, text: str, reason: str) -> MedQAConversion:
    return MedQAConversion(key, False, text, reason=reason)


def convert_question(text: str, key: str, seed: int, table: RelativeTable | None = None,
                     answer: str | None = None) -> MedQAConversion:
    """Rewrite one vignette (see the module docstring); never raises for unconvertible text."""
    table = table or RelativeTable()
    text = text.strip()
    if answer is not None and _OPTION_ANSWER.search(answer):
        return _fail(key, text, f"the answer {answer!r} refers to the options")
    end = re.search(r"[.?!]\s+(?=[A-Z])", text)
    first = text[: end.start() + 1] if end else text
    m = _OPENING.search(first) or _OPENING_NO_AGE.search(first)
    if m is None:
        return _fail(key, text, "no 'a <age>-year-old <person>' opening in the first sentence")
    prefix = text[: m.start()]
    if prefix and not re.fullmatch(r"[A-Z][^,]{0,200},\s*", prefix):
        return _fail(key, text, f"the patient is not the sentence's subject (text before: {prefix[:60]!r})")
    np = m.group("np")
    tokens = list(re.finditer(r"[\w'’-]+", np))
    is_person = [t.group(0).lower() in _PERSON or bool(_GRAVIDA.match(t.group(0))) for t in tokens]
    if any(is_person):
        # the head is the last noun of the first run ("male newborn" -> newborn; "G1P1 patient" ->
        # patient); a following gravida token ("woman gravida 2") stays in the post-modifier
        h = is_person.index(True)
        while h + 1 < len(tokens) and is_person[h + 1] and not _GRAVIDA.match(tokens[h + 1].group(0)):
            h += 1
        head, head_text = tokens[h].group(0).lower(), tokens[h].group(0)
        pre_raw, post_raw = np[: tokens[h].start()], np[tokens[h].end():]
    elif not tokens or tokens[0].group(0).lower() in _POST_WORDS or np.lstrip().startswith(","):
        head, head_text, pre_raw, post_raw = "patient", "", "", np  # "A 65-year-old with ..."
    else:
        return _fail(key, text, f"no person noun in {np.strip()!r}")
    gravida = bool(_GRAVIDA.match(head))  # "a 32-year-old G5P4105 ..." / "gravida 1 at 32 weeks"
    sex = _sex(text, [t.group(0) for t in tokens], head)
    if sex is None:
        return _fail(key, text, "cannot tell the patient's sex")
    raw_age, unit = m.groupdict().get("age"), m.groupdict().get("unit")
    age = None if raw_age is None else int(_NUMBER_WORDS.get(raw_age.lower(), raw_age))
    rels = list((table.male if sex == "male" else table.female)[_band(age, unit)])
    exclusions = {"husband": r"\bhis wife\b", "wife": r"\bher husband\b",
                  "son": r"\bhis (mother|father|parents)\b", "daughter": r"\bher (mother|father|parents)\b"}
    kept = [r for r in rels if not (r in exclusions and re.search(exclusions[r], text, re.IGNORECASE))]
    relative = rng_for(seed, "medqa-relative", key).choice(kept or rels)
    age_text = None if age is None else str(age) if unit == "year" else f"{age} {unit}{'s' if age != 1 else ''} old"
    # descriptor: modifiers before the age and before the noun; the noun if it says more than sex;
    # post-modifiers ("at 30 weeks' gestation", "who works as a carpenter"), as written
    pre = " ".join(p for p in (m.group("pre").strip(" ,"), pre_raw.strip(" ,")) if p)
    post = post_raw.strip(" ,")
    adverb = ""
    if re.fullmatch(r"[a-z]+ly", post):  # "a 17-year-old female accidentally eats" -> "... accidentally eats"
        adverb, post = post + " ", ""
    if _PERSON.get(head) or head in _PLAIN_HEADS:  # "male newborn" -> the relative says the sex
        pre = re.sub(r"\b(male|female)\b,?\s*", "", pre).strip(" ,")
    if gravida:
        descriptor = ", ".join(p for p in (pre, (head_text + post_raw).strip(" ,")) if p)
    elif head not in _PLAIN_HEADS:  # "a college student", "a truck driver from Ohio"
        noun_phrase = " ".join(p for p in (pre, head_text) if p) + (post_raw.rstrip(" ,") if post else "")
        descriptor = ("an " if noun_phrase[:1].lower() in "aeiou" else "a ") + noun_phrase
    else:
        descriptor = ", ".join(p for p in (pre, post) if p)
    my = "My" if not prefix else "my"
    parts = [f"{my} {relative}", age_text, descriptor]
    opening = ", ".join(p for p in parts if p)
    # a relative clause keeps the source's own punctuation: "my mother, 95, who is a resident ...,
    # got up", "my wife, 22, from a rural area who recently discovered she was pregnant ..."
    if (age_text or descriptor) and (not re.search(r"\b(who|that|which|whose)\b", descriptor)
                                     or post_raw.rstrip().endswith(",")):
        opening += ","
    opening += " " + adverb.rstrip() if adverb else ""
    rest = text[m.start("verb"):]
    converted = rewrite_which_of_the_following(prefix + opening + " " + rest)
    leftover = _OPTION_WORDING.search(converted)
    if leftover:
        return _fail(key, text, f"the question refers to the answer options ({leftover.group(0)!r})")
    return MedQAConversion(key, True, converted, relative, sex, age_text or "adult")


def convert_items(items: Sequence[Item], seed: int, on_unconvertible: str = "drop",
                  table: RelativeTable | None = None) -> tuple[list[Item], list[MedQAConversion]]:
    """Rewrite MedQA items. on_unconvertible: "drop" (default; the report lists them), "keep"
    (the item keeps its source question, extra["converted"] = False) or "error" (raise, naming
    the first). Converted items get extra original_question, relative, converted=True."""
    if on_unconvertible not in ("drop", "keep", "error"):
        raise TaskDataError(f"on_unconvertible must be 'drop', 'keep' or 'error', got {on_unconvertible!r}")
    out, failed = [], []
    for it in items:
        if it.task != "medqa":
            raise TaskDataError(f"convert_items takes MedQA items, got {it.task} item {it.key!r}")
        source = it.extra.get("original_question", it.question)
        conv = convert_question(source, it.key, seed, table, answer=it.right_answer)
        if conv.ok:
            out.append(it.with_(question=conv.question, extra_update={
                "original_question": source, "relative": conv.relative, "converted": True}))
            continue
        failed.append(conv)
        if on_unconvertible == "error":
            raise TaskDataError(f"medqa item {it.key!r} cannot be rewritten: {conv.reason}")
        if on_unconvertible == "keep":
            out.append(it.with_(extra_update={"original_question": source, "converted": False}))
    return out, failed
