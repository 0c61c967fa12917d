"""What kind of answer a question asks for, and whether a sentence holds one.

"How many patients ...?" wants a number next to "patients"; "what percentage ...?" a percent;
"how long ...?" a duration; "when ...?" a year; "what dose ...?" an amount with a unit;
"which journal published ...?" the article's reference line ("Source: ..."). The
small encoder barely links "how many patients" to "These studies included 245 patients", so the
answer composer (service/answering.py) gives a sentence holding the asked-for kind of answer a
bonus. The rules are about English question forms, not about any document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.lexical import tokenize

_NUMBER = (
    r"(?:\d[\d,.]*(?:\s*[×x]\s*10\S*)?|one|two|three|four|five|six|seven|eight|nine|ten|"
    r"eleven|twelve|dozens?|hundreds?|thousands?)"
)
_COUNT = re.compile(r"\bhow many\s+((?:[\w-]+\s+){0,2}?[\w-]+)|\bnumber of\s+([\w-]+)", re.I)
_PERCENT = re.compile(
    r"\b(?:percent|percentage|proportion|what share|what fraction|how (?:likely|common))\b", re.I
)
_DURATION = re.compile(
    r"\b(?:how long|how many (?:hours|days|weeks|months|years)|duration|"
    r"follow(?:ed)?[- ]?up|how often|how soon|how quickly)\b",
    re.I,
)
_YEAR = re.compile(r"\b(?:when|what year|which year|what date|up to what date)\b", re.I)
# Any question after a number or a date (a looser net than the kinds above).
_QUANTITY = re.compile(
    r"\b(how (?:many|much|long|often|big|large|high|low)|what (?:percentage|proportion|"
    r"fraction|number|dose|doses|dosage|rate|year)|when|which year|how old)\b",
    re.IGNORECASE,
)
_DOSE = re.compile(r"\b(?:dose|doses|dosage|dosing|how much)\b", re.I)
_REFERENCE = re.compile(
    r"\b(?:journal|published|publish|publication|pmid|pmcid|doi|volume|citation|"
    r"who wrote|first author|last author|authors? (?:list|names))\b",
    re.I,
)

_COUNTED = re.compile(_NUMBER + r"\s+((?:[\w-]+\s+){0,2}?[\w-]+)", re.I)
_HAS_PERCENT = re.compile(r"\d\s?%|\bpercent", re.I)
_HAS_DURATION = re.compile(
    _NUMBER + r"\s*(?:-\s*)?(?:hours?|days?|weeks?|months?|years?)\b|"
    r"\b(?:daily|weekly|monthly|twice|once)\b",
    re.I,
)
_HAS_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_HAS_AMOUNT = re.compile(
    r"\d[\d,.]*\s*(?:[×x]\s*10\S*|hours?|days?|weeks?|months?|years?|times|daily|cells|"
    r"mg|ml|μg|µg|g|kg)\b",
    re.I,
)


@dataclass(frozen=True)
class AnswerType:
    counted: frozenset[str]  # stems of what "how many ..." counts
    percent: bool
    duration: bool
    year: bool
    amount: bool
    reference: bool = False  # where and by whom the article was published
    quantity: bool = False  # some number or date (answering.py favours sentences with digits)

    @classmethod
    def of(cls, question: str) -> AnswerType:
        counted = set()
        for match in _COUNT.finditer(question):
            words = tokenize(match.group(1) or match.group(2))
            if words:
                counted.add(words[-1])  # "how many adult patients" counts patients
        return cls(
            frozenset(counted),
            bool(_PERCENT.search(question)),
            bool(_DURATION.search(question)),
            bool(_YEAR.search(question)),
            bool(_DOSE.search(question)),
            bool(_REFERENCE.search(question)),
            bool(_QUANTITY.search(question)),
        )

    @property
    def known(self) -> bool:
        return bool(
            self.counted
            or self.percent
            or self.duration
            or self.year
            or self.amount
            or self.reference
        )

    def found_in(self, sentence: str) -> bool:
        """The sentence holds an answer of the asked-for kind."""
        if self.counted:
            for match in _COUNTED.finditer(sentence):
                if self.counted & set(tokenize(match.group(1))):
                    return True
        return bool(
            (self.percent and _HAS_PERCENT.search(sentence))
            or (self.duration and _HAS_DURATION.search(sentence))
            or (self.year and _HAS_YEAR.search(sentence))
            or (self.amount and _HAS_AMOUNT.search(sentence))
            or (self.reference and sentence.lower().startswith("source:"))
        )
