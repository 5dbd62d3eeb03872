"""Infilling (MMM, Ens & Pasquier 2020): regenerate chosen bars or tracks of a piece.

The token format (the ``mmm`` preset: miditok's ``MMM`` over REMI, one ``Track_Start ...
Track_End`` block per track, each track's bars in order) that training, the grammar and the
pipeline share::

    BOS
    Track_Start Program_p [track ACs] <bar 1> <bar 2> ... Track_End        one block per track,
    Track_Start Program_q [track ACs] <bar 1> ... Track_End                 in the piece's order
    FillBar_Start <notes of hole 1> FillBar_End                             one fill per
    FillBar_Start <notes of hole 2> FillBar_End                             placeholder, in order
    EOS

* **Bars** are counted from 1 as a musician counts them: bar ``n`` of a track is its ``n``-th
  ``Bar_None`` (REMI writes a ``Bar`` for every bar from time 0, empty ones included, up to the
  track's last note). A track that ends before a hole gets empty bars (``Bar_None TimeSig_x``,
  the meter read from the longest track) so that every hole has a bar to stand in.
* **A kept bar** is left exactly as miditok wrote it.
* **A hole** (masked bar) stays in its track as a *placeholder bar*: ``Bar_None TimeSig_x``,
  then the bar's tokens that are not notes, in their order (tempo changes as ``Position_p
  Tempo_t``, bar attribute controls ``ACBar...``), then ``Infill_Bar``. Keeping the Bar and
  TimeSig tokens keeps the bars counted and the meter known; keeping the tempo changes keeps
  the piece's tempo map whatever is filled in (miditok decodes the tempi of the first track
  only, and every track carries them); keeping the bar's controls lets a caller condition the
  fill on them.
* **A fill** is ``FillBar_Start`` + the hole's notes + ``FillBar_End``: ``Position_p`` then one
  or more notes (``Pitch_x`` / ``PitchDrum_x`` on a drum track, ``Velocity_v``, ``Duration_d``)
  per onset, positions strictly increasing and inside the bar of the placeholder's meter. No
  ``Bar``, ``TimeSig``, ``Tempo``, ``Program``, attribute-control or ``Track`` token. An empty
  bar is ``FillBar_Start FillBar_End``.
* **Fills come in the order of the ``Infill_Bar`` tokens** (track by track, bar by bar), one per
  placeholder, then ``EOS``: after the last ``Track_End`` the only valid tokens are
  ``FillBar_Start`` while placeholders are left unfilled, ``EOS`` once every one is filled.
* **A whole-track infill** masks every bar of the track (up to the piece's last bar).
* **Splicing** puts each fill back into its placeholder: ``Bar_None TimeSig_x`` then the
  placeholder's tokens and the fill's notes merged by position (at one position the tempo and
  control tokens first, then the notes). Every note outside the holes is kept note for note as
  the tokenizer reads it (its onset and duration on the tokenizer's grid).

Training examples (``infilling: true`` in a recipe) are bar windows (``mode="bars"`` of
:func:`~midiformers.data_scripts.tokenize_dataset`): consecutive whole bars of every track,
each window a complete piece in the format above without holes; the collator
(:class:`~midiformers.training.infilling.DataCollatorForInfilling`) then picks random holes.
"""
