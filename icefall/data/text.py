"""Seeded sentence generator for the synthesized corpora.

A small template grammar over word lists (a few hundred words per language) makes sentences
that are varied enough for a BPE model and an LM-free decoder to face a real task, yet cheap
and fully deterministic: the same ``random.Random`` state always yields the same sentence.

English transcripts are upper case without punctuation (the LibriSpeech convention);
Vietnamese transcripts are lower case, NFC-normalised, with their diacritics.
"""
from __future__ import annotations

import random
import unicodedata
from typing import Dict, List

# ----------------------------------------------------------------------------- English
_EN_NAMES = """alice bob carol david emma frank grace henry isabel jack kate lucas mary
nathan olivia peter rachel simon thomas victor william sophia daniel laura martin helen
oscar julia george anna""".split()

# Nouns with a regular plural (+s), so the plural form needs no table.
_EN_NOUNS = """apple garden river window teacher doctor farmer letter table chair house
flower bird horse dog cat tree road bridge mountain village city market friend brother
sister mother father student boat train ship car bottle basket candle lamp picture
painter singer soldier kitten rabbit pocket jacket button ticket hammer ladder engine
castle tower island forest valley meadow orange lemon cookie carpet pillow blanket
mirror drawer kettle pencil notebook hat coat boot shoe glove ring key door wall roof
field hill lake cloud storm song story poem game puzzle problem answer question idea
dream plan machine computer camera radio phone bag box cup plate spoon fork knife
bucket shovel wagon tractor rocket planet star""".split()

_EN_ADJECTIVES = """big small old young happy sad quiet loud bright dark warm cold green red
blue yellow white black brown heavy light quick slow clever gentle strange famous
little tall short round empty busy tired hungry lucky careful brave friendly lonely
noisy shiny dusty muddy wooden silver golden ancient modern simple broken clean
fresh sweet bitter soft hard early late""".split()

# (base, third person, past) for each verb that takes an object.
_EN_VERBS = [
    ("see", "sees", "saw"), ("find", "finds", "found"), ("carry", "carries", "carried"),
    ("paint", "paints", "painted"), ("open", "opens", "opened"), ("close", "closes", "closed"),
    ("watch", "watches", "watched"), ("visit", "visits", "visited"), ("clean", "cleans", "cleaned"),
    ("build", "builds", "built"), ("buy", "buys", "bought"), ("sell", "sells", "sold"),
    ("bring", "brings", "brought"), ("take", "takes", "took"), ("want", "wants", "wanted"),
    ("like", "likes", "liked"), ("hold", "holds", "held"), ("push", "pushes", "pushed"),
    ("pull", "pulls", "pulled"), ("draw", "draws", "drew"), ("count", "counts", "counted"),
    ("fix", "fixes", "fixed"), ("follow", "follows", "followed"), ("remember", "remembers",
    "remembered"), ("forget", "forgets", "forgot"), ("throw", "throws", "threw"),
    ("catch", "catches", "caught"), ("keep", "keeps", "kept"), ("lose", "loses", "lost"),
    ("show", "shows", "showed"), ("hide", "hides", "hid"), ("move", "moves", "moved"),
]
# Intransitive verbs: (base, third person, past).
_EN_IVERBS = [
    ("sleep", "sleeps", "slept"), ("run", "runs", "ran"), ("walk", "walks", "walked"),
    ("sing", "sings", "sang"), ("dance", "dances", "danced"), ("wait", "waits", "waited"),
    ("laugh", "laughs", "laughed"), ("smile", "smiles", "smiled"), ("travel", "travels",
    "travelled"), ("arrive", "arrives", "arrived"), ("swim", "swims", "swam"),
    ("work", "works", "worked"), ("rest", "rests", "rested"), ("jump", "jumps", "jumped"),
]
_EN_ADVERBS = """quickly slowly quietly happily carefully suddenly often never always
today yesterday again soon early together alone""".split()
_EN_PREPS = "in on under near behind beside across through over into from with".split()
_EN_DETS = "the a this that every one".split()
_EN_PL_DETS = "the these those some many".split()
_EN_NUMBERS = """two three four five six seven eight nine ten eleven twelve twenty
thirty forty fifty hundred""".split()
_EN_TIMES = """in the morning|at night|after lunch|before dinner|on monday|on friday|
every day|last week|next year|in the summer|in the winter""".replace("\n", "").split("|")


def _np(rng: random.Random) -> List[str]:
    """A noun phrase: name, or determiner + optional adjectives + noun (maybe plural)."""
    r = rng.random()
    if r < 0.2:
        return [rng.choice(_EN_NAMES)]
    adjs = [rng.choice(_EN_ADJECTIVES) for _ in range(rng.choice([0, 1, 1, 2]))]
    if r < 0.4:
        return [rng.choice(_EN_NUMBERS)] + adjs + [rng.choice(_EN_NOUNS) + "s"]
    if r < 0.55:
        return [rng.choice(_EN_PL_DETS)] + adjs + [rng.choice(_EN_NOUNS) + "s"]
    rest = adjs + [rng.choice(_EN_NOUNS)]
    det = rng.choice(_EN_DETS)
    if det == "a" and rest[0][0] in "aeiou":
        det = "an"
    return [det] + rest


def _english(rng: random.Random) -> List[str]:
    subj = _np(rng)
    plural = subj[-1].endswith("s") and subj[-1] not in _EN_NAMES and subj[0] != "one"
    tense = rng.choice(["past", "past", "present", "future"])

    def verb(forms) -> List[str]:
        if tense == "past":
            return [forms[2]]
        if tense == "future":
            return ["will", forms[0]]
        return [forms[0] if plural else forms[1]]

    t = rng.random()
    if t < 0.45:
        words = subj + verb(rng.choice(_EN_VERBS)) + _np(rng)
    elif t < 0.7:
        words = subj + verb(rng.choice(_EN_IVERBS)) + [rng.choice(_EN_PREPS)] + _np(rng)
    elif t < 0.85:
        words = subj + verb(rng.choice(_EN_VERBS)) + _np(rng) + rng.choice(_EN_TIMES).split()
    else:
        words = subj + verb(rng.choice(_EN_IVERBS)) + [rng.choice(_EN_ADVERBS)]
    if rng.random() < 0.25:
        words += ["and"] + _np(rng) + verb(rng.choice(_EN_IVERBS))
    return words


# ---------------------------------------------------------------------------- Vietnamese
_VI_SUBJECTS = """tôi|anh ấy|chị ấy|bạn tôi|chúng tôi|họ|em bé|cô giáo|ông nội|bà ngoại|
người bán hàng|bác sĩ|học sinh|mẹ tôi|bố tôi|anh trai|em gái|cậu bé|cô gái|người lính|
nông dân|ca sĩ|thầy giáo|chú mèo|con chó""".replace("\n", "").split("|")
_VI_VERBS = """ăn|uống|mua|bán|đọc|viết|nhìn|thấy|tìm|mang|cầm|rửa|nấu|làm|vẽ|hát|
sửa|đếm|thích|cần|gửi|nhận|mở|đóng|xây|trồng|hái|giữ|cho|lấy""".replace("\n", "").split("|")
_VI_OBJECTS = """cơm|nước|sách|báo|thư|bánh mì|cà phê|trà|hoa|quả cam|quả táo|con cá|
cái bàn|cái ghế|cái cửa|chiếc xe|ngôi nhà|bức tranh|bài hát|cái áo|đôi giày|cái mũ|
cây bút|quyển vở|chiếc thuyền|con đường|cái cầu|bát phở|đĩa rau|chén cơm|ly sữa|
cây chuối|quả dừa|con gà|con vịt|cái túi|chiếc điện thoại|máy tính""".replace("\n", "").split("|")
_VI_ADJ = """mới|cũ|to|nhỏ|đẹp|xanh|đỏ|vàng|trắng|đen|ngon|nóng|lạnh|dài|ngắn|cao|thấp|
nặng|nhẹ|sạch|bẩn|rẻ|đắt|tươi""".replace("\n", "").split("|")
_VI_NUMBERS = "hai|ba|bốn|năm|sáu|bảy|tám|chín|mười|một trăm".split("|")
_VI_PLACES = """ở nhà|ở chợ|ở trường|ở công viên|trên núi|bên sông|trong bếp|ngoài vườn|
ở thành phố|ở làng|trên bàn|dưới gốc cây|ở bệnh viện|ở bờ biển""".replace("\n", "").split("|")
_VI_TIMES = """hôm nay|hôm qua|ngày mai|buổi sáng|buổi tối|mỗi ngày|tuần trước|năm sau|
bây giờ|lúc trưa""".replace("\n", "").split("|")
_VI_ASPECT = "đã|đang|sẽ|vừa|không|chưa|".split("|")
_VI_ADV = "rất|hơi|khá|quá".split("|")


def _vietnamese(rng: random.Random) -> List[str]:
    words: List[str] = []
    if rng.random() < 0.3:
        words += rng.choice(_VI_TIMES).split()
    words += rng.choice(_VI_SUBJECTS).split()
    aspect = rng.choice(_VI_ASPECT)
    if aspect:
        words.append(aspect)
    words.append(rng.choice(_VI_VERBS))
    if rng.random() < 0.3:
        words.append(rng.choice(_VI_NUMBERS))
    words += rng.choice(_VI_OBJECTS).split()
    if rng.random() < 0.5:
        if rng.random() < 0.3:
            words.append(rng.choice(_VI_ADV))
        words.append(rng.choice(_VI_ADJ))
    if rng.random() < 0.5:
        words += rng.choice(_VI_PLACES).split()
    return words


_GENERATORS = {"en": _english, "vi": _vietnamese}


def generate_sentence(rng: random.Random, lang: str = "en") -> str:
    """One transcript: English upper case, Vietnamese lower case NFC, words separated by a
    single space, no punctuation."""
    words = _GENERATORS[lang](rng)
    text = " ".join(words)
    text = unicodedata.normalize("NFC", text)
    return text.upper() if lang == "en" else text


def vocabulary(lang: str = "en") -> List[str]:
    """All words the generator can emit (as they appear in transcripts), sorted."""
    if lang == "en":
        words = set(_EN_NAMES + _EN_ADJECTIVES + _EN_ADVERBS + _EN_PREPS + _EN_DETS)
        words |= set(_EN_PL_DETS + _EN_NUMBERS + ["an", "and", "will"])
        words |= set(_EN_NOUNS) | {n + "s" for n in _EN_NOUNS}
        for forms in _EN_VERBS + _EN_IVERBS:
            words |= set(forms)
        for phrase in _EN_TIMES:
            words |= set(phrase.split())
        return sorted(w.upper() for w in words)
    if lang == "vi":
        phrases = _VI_SUBJECTS + _VI_VERBS + _VI_OBJECTS + _VI_ADJ + _VI_NUMBERS
        phrases += _VI_PLACES + _VI_TIMES + [a for a in _VI_ASPECT if a] + _VI_ADV
        return sorted({unicodedata.normalize("NFC", w) for p in phrases for w in p.split()})
    raise ValueError(f"unknown language {lang!r}; known: {sorted(_GENERATORS)}")


LANGUAGES: Dict[str, str] = {"en": "English", "vi": "Vietnamese"}
