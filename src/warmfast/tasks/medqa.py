"""MedQA vignettes rewritten as first-person questions about a relative (PROTOCOL section 4),
in the style of the study's own rewrites (the 19 MedQA items of its released sample outputs; see
docs/medqa_conversion.md for what they show and where we still differ).

"A 21-year-old college student comes to the physician ... Which of the following is the most
likely diagnosis?" -> "My brother, 21, comes to the physician ... what is the most likely
diagnosis?". The study's regexes are unpublished; these are warmfast's own:

1. Opening: the first sentence's "a/an [modifiers] <age>-<unit>-old [modifiers] <person noun>
   [post-modifiers] <verb>", at the very start or after one leading clause ending in a comma
   ("Two days after surgery, a 68-year-old woman develops ..."). It becomes "My <relative>,
   <age>," (months/weeks/days: "3 months old"). As in the study's rewrites, descriptors before the
   noun go ("college student", "G2P1 woman", "Caucasian female" -> nothing), and after a bare
   noun ("a 52-year-old woman presents to ...") the presenting verb goes too: presents / comes /
   arrives, and the auxiliary of "is brought" / "is hospitalized" ("My wife, 52, to her primary
   care physician ..."); after descriptors the verb stays ("My wife, 33, presents to the office").
   Post-modifiers ("with diabetes", "at 30 weeks' gestation") stay, as an appositive (ours: the
   sample shows none).
2. Sex: the noun (man, woman, boy, girl, male, female, ...) or pregnancy words, else the
   pronouns of the whole vignette (he/his/him vs she/her) when only one side occurs, or one side
   outnumbers the other 3 to 1.
3. Relative: by sex and age band, `RelativeTable` (config value). Default, read off the study's
   rewrites: a child is a son/daughter, 18-24 a brother/sister, 25-59 a husband/wife, 60+ a
   father/mother (cut points inside the sample's gaps 22|25 and 58|63; teens, unseen there, are
   sons/daughters: our choice). With several relatives in a band, a seeded choice,
   rng_for(seed, "medqa-relative", key).
4. Question: "which (one) of the following" -> "what", always lower-case, wherever it stands
   ("... caused by which of the following pathogens?" -> "... caused by what pathogens?");
   "Of the following, which" -> "Which". Options are never shown.

A question whose first sentence names no patient (research and population questions) keeps its
text with only the question rewritten, as the study did ("Current recommendations state ..."):
ok, relative None. An item is reported unconvertible (never half-rewritten) when its first
sentence names a patient ("<age>-year-old") without the opening above (newborns delivered "to a
29-year-old woman", a patient who is not the subject), the patient's sex cannot be told, the
question still refers to the options ("all of the following", "EXCEPT", "what statement", "answer
choices") or the answer does ("All of the above", "Both A and B").

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
_AGE_MENTION = re.compile(r"\b" + _AGE + r"[\s-]*(?:year|month|week|day|hour)s?[\s-]old\b", re.IGNORECASE)
_OPENING_NO_AGE = re.compile(r"^(?P<art>An?)\s+(?P<pre>)(?P<np>man|woman|boy|girl|patient)\s+(?P<verb>" + _VERBS + r")\b")
# presenting verbs the study's rewrites drop after a bare noun; "is" / "was": the auxiliary only
_DROPPED_VERBS = {"presents", "presented", "comes", "came", "arrives", "arrived", "is", "was"}
_OPTION_WORDING = re.compile(
    r"\b(?i:of the following|which of these|answer choices?|choices? below|options? below|the options|"
    r"all of the above|none of the above|(?:which|what) (?:option|choice|answer|statement|response)s?)\b"
    r"|\bEXCEPT\b|:\s*$")
_OPTION_ANSWER = re.compile(r"\b(?:all|none|both) of the above\b|^\s*both [A-E] and [A-E]\b|^\s*[A-E] and [A-E]\s*$",
                            re.IGNORECASE)


BANDS = ("child", "teen", "young", "middle", "old")


@dataclass(frozen=True)
class RelativeTable:
    """Relatives by sex for each age band: child (< teen_from years, or an age in months/weeks/
    days), teen, young, middle, old, starting at the ages in `starts` (default 13, 18, 25, 60).
    Defaults follow the study's rewrites (module doc); a band with several relatives draws one."""

    male: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "child": ("son",), "teen": ("son",), "young": ("brother",), "middle": ("husband",), "old": ("father",)})
    female: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "child": ("daughter",), "teen": ("daughter",), "young": ("sister",), "middle": ("wife",),
        "old": ("mother",)})
    starts: tuple[int, int, int, int] = (13, 18, 25, 60)

    def __post_init__(self) -> None:
        for sex, table in (("male", self.male), ("female", self.female)):
            for band in BANDS:
                if not table.get(band):
                    raise TaskDataError(f"RelativeTable.{sex} lacks relatives for age band {band!r}")
        if list(self.starts) != sorted(self.starts) or len(self.starts) != 4:
            raise TaskDataError(f"RelativeTable.starts must be 4 increasing ages (teen, young, middle, old), "
                                f"got {self.starts!r}")

    def band(self, age: int | None, unit: str | None) -> str:
        if unit in ("month", "week", "day", "hour"):
            return "child"
        if age is None:
            return "middle"
        return BANDS[sum(age >= s for s in self.starts)]


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
    """'which (one) of the following' -> 'what', lower-case wherever it stands (the study's style:
    'Which of the following drugs is' -> 'what drugs is'); 'Of the following, which' -> 'Which'."""
    text = re.sub(r"\b[Ww]hich (?:one )?of the following\b", "what", text)
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
    if m is None and not _AGE_MENTION.search(first):
        return _question_only(key, text)   # no patient in the first sentence: the study rewrote the question alone
    if m is None:
        return _fail(key, text, "no 'a <age>-year-old <person> <verb>' opening in the first sentence")
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
        head = tokens[h].group(0).lower()
        pre_raw, post_raw = np[: tokens[h].start()], np[tokens[h].end():]
    elif not tokens or tokens[0].group(0).lower() in _POST_WORDS or np.lstrip().startswith(","):
        head, pre_raw, post_raw = "patient", "", np  # "A 65-year-old with ..."
    else:
        return _fail(key, text, f"no person noun in {np.strip()!r}")
    sex = _sex(text, [t.group(0) for t in tokens], head)
    if sex is None:
        return _fail(key, text, "cannot tell the patient's sex")
    raw_age, unit = m.groupdict().get("age"), m.groupdict().get("unit")
    age = None if raw_age is None else int(_NUMBER_WORDS.get(raw_age.lower(), raw_age))
    # no exclusions: the study's own rewrite makes a man who speaks of "his wife" the user's husband
    relative = rng_for(seed, "medqa-relative", key).choice(
        list((table.male if sex == "male" else table.female)[table.band(age, unit)]))
    age_text = None if age is None else str(age) if unit == "year" else f"{age} {unit}{'s' if age != 1 else ''} old"
    # The study's style: descriptors before the age and before the noun go, the noun goes; post-
    # modifiers ("at 30 weeks' gestation", "who works as a carpenter") stay as written (ours).
    post = post_raw.strip(" ,")
    adverb = ""
    if re.fullmatch(r"[a-z]+ly", post):  # "a 17-year-old female accidentally eats" -> "... accidentally eats"
        adverb, post = post, ""
    bare = not m.group("pre").strip() and not pre_raw.strip() and not post_raw.strip() and head in _PLAIN_HEADS
    my = "My" if not prefix else "my"
    opening = ", ".join(p for p in (f"{my} {relative}", age_text, post) if p)
    # a relative clause keeps the source's own punctuation: "my mother, 95, who is a resident ...,
    # got up", "my wife, 22, from a rural area who recently discovered she was pregnant ..."
    if (age_text or post) and (not re.search(r"\b(who|that|which|whose)\b", post) or post_raw.rstrip().endswith(",")):
        opening += ","
    opening += f" {adverb}" if adverb else ""
    verb = m.group("verb")
    rest = text[m.start("verb"):]
    if bare and verb.split()[0].lower() in _DROPPED_VERBS:
        # "a 52-year-old woman presents to ..." -> "My wife, 52, to ..."; "is brought" -> "brought"
        rest = text[m.start("verb") + len(verb.split()[0]):].lstrip()
    converted = rewrite_which_of_the_following(prefix + opening + " " + rest)
    leftover = _OPTION_WORDING.search(converted)
    if leftover:
        return _fail(key, text, f"the question refers to the answer options ({leftover.group(0)!r})")
    return MedQAConversion(key, True, converted, relative, sex, age_text or "adult")


def _question_only(key: str, text: str) -> MedQAConversion:
    converted = rewrite_which_of_the_following(text)
    leftover = _OPTION_WORDING.search(converted)
    if leftover:
        return _fail(key, text, f"the question refers to the answer options ({leftover.group(0)!r})")
    return MedQAConversion(key, True, converted, reason="no patient opening: only the question is rewritten")


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
