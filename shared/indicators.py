"""Incremental technical indicators: one ``update`` per closed candle, state in msgspec Structs.

Every indicator is a mutable ``msgspec.Struct`` whose fields are its whole state, so a set of
indicators can be checkpointed with ``msgspec.msgpack.encode`` and restored bit for bit (floats
travel as IEEE doubles). ``update`` does a bounded amount of work that does not grow with the
length of the series; the adaptive Supertrend's work is bounded by its training window.

Inputs are floats in any price unit (the signals core passes integer paise as floats); outputs
are in the same unit, except ADX and the DIs (0..100). ``None`` means "not ready yet".

Seeding follows TA-Lib (default compatibility, unstable period 0) so that the values agree with
``talib.EMA/ATR/ADX/PLUS_DI/MINUS_DI`` from the first defined bar:

- EMA(n): the first value, at bar n-1, is the mean of the first n inputs; then
  ``ema += (x - ema) * 2 / (n + 1)``.
- ATR(n) (Wilder): true range from bar 1 (it needs the previous close); the first value, at bar
  n, is the mean of TR[1..n]; then ``atr = (atr * (n - 1) + tr) / n``.
- +DI/-DI(n): +DM/-DM and TR are summed over bars 1..n-1, then Wilder-smoothed
  (``s = s - s / n + x``) from bar n, where the DIs are first defined. ADX(n) is the mean of
  DX over bars n..2n-1 (first value at bar 2n-1), then Wilder-smoothed. As in TA-Lib, a TR sum
  or DI sum within 1e-8 of zero leaves DX undefined and ADX unchanged.

Supertrend (classic): ``hl2 +/- multiplier * ATR`` (the Wilder ATR above) with the standard
final-band rules: the upper band only moves down unless the previous close broke above it, the
lower band only moves up unless the previous close broke below it; a bearish trend flips bullish
when the close rises above the upper band, a bullish one flips bearish when it falls below the
lower band. The first bar with an ATR starts bearish (line = upper band), as TradingView and the
original system do.

Adaptive Supertrend: see :class:`AdaptiveSupertrend` for the original's method and how this
version makes it deterministic.
"""

from __future__ import annotations

import math

import msgspec

TA_EPSILON = 1e-8
"""TA-Lib's ``TA_IS_ZERO`` bound: sums within it of zero count as zero."""

BULLISH = 1
BEARISH = -1


def true_range(high: float, low: float, prev_close: float) -> float:
    """max(high - low, |high - prev_close|, |low - prev_close|)."""
    tr = high - low
    up = abs(high - prev_close)
    if up > tr:
        tr = up
    down = abs(low - prev_close)
    if down > tr:
        tr = down
    return tr


class Ema(msgspec.Struct, kw_only=True):
    """Exponential moving average, seeded with the simple mean of the first ``period`` inputs."""

    period: int
    n: int = 0
    seed_sum: float = 0.0
    value: float | None = None

    def update(self, x: float) -> float | None:
        v = self.value
        if v is not None:
            v = (x - v) * (2.0 / (self.period + 1)) + v
            self.value = v
            return v
        self.n += 1
        self.seed_sum += x
        if self.n >= self.period:
            self.value = self.seed_sum / self.period
        return self.value


class Atr(msgspec.Struct, kw_only=True):
    """Wilder's average true range; the first value at bar ``period`` is the mean TR[1..period]."""

    period: int
    n: int = 0
    prev_close: float = 0.0
    tr_sum: float = 0.0
    value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        n = self.n
        self.n = n + 1
        if n == 0:
            self.prev_close = close
            return None
        tr = true_range(high, low, self.prev_close)
        self.prev_close = close
        v = self.value
        p = self.period
        if v is None:
            self.tr_sum += tr
            if n >= p:
                self.value = self.tr_sum / p
            return self.value
        v = (v * (p - 1) + tr) / p
        self.value = v
        return v


class Adx(msgspec.Struct, kw_only=True):
    """Wilder's ADX with +DI and -DI (0..100), seeded exactly as TA-Lib."""

    period: int
    n: int = 0
    prev_high: float = 0.0
    prev_low: float = 0.0
    prev_close: float = 0.0
    plus_dm: float = 0.0
    minus_dm: float = 0.0
    tr: float = 0.0
    dx_sum: float = 0.0
    plus_di: float | None = None
    minus_di: float | None = None
    value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        """Feed one bar; returns ADX (``None`` before bar 2*period-1)."""
        n = self.n
        self.n = n + 1
        if n == 0:
            self.prev_high, self.prev_low, self.prev_close = high, low, close
            return None
        p = self.period
        diff_p = high - self.prev_high
        diff_m = self.prev_low - low
        tr = true_range(high, low, self.prev_close)
        self.prev_high, self.prev_low, self.prev_close = high, low, close
        pdm = mdm = 0.0
        if diff_m > 0 and diff_p < diff_m:
            mdm = diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm = diff_p
        if n < p:
            self.plus_dm += pdm
            self.minus_dm += mdm
            self.tr += tr
            return None
        s_p = self.plus_dm - self.plus_dm / p + pdm
        s_m = self.minus_dm - self.minus_dm / p + mdm
        s_tr = self.tr - self.tr / p + tr
        self.plus_dm, self.minus_dm, self.tr = s_p, s_m, s_tr
        dx: float | None = None
        if -TA_EPSILON < s_tr < TA_EPSILON:
            self.plus_di = self.minus_di = 0.0
        else:
            mdi = 100.0 * (s_m / s_tr)
            pdi = 100.0 * (s_p / s_tr)
            self.plus_di, self.minus_di = pdi, mdi
            total = mdi + pdi
            if not (-TA_EPSILON < total < TA_EPSILON):
                dx = 100.0 * (abs(mdi - pdi) / total)
        if n < 2 * p - 1:
            if dx is not None:
                self.dx_sum += dx
            return None
        if n == 2 * p - 1:
            if dx is not None:
                self.dx_sum += dx
            self.value = self.dx_sum / p
        elif dx is not None:
            self.value = (self.value * (p - 1) + dx) / p  # type: ignore[operator]
        return self.value


def _band_step(
    upper: float,
    lower: float,
    direction: int,
    prev_close: float,
    hl2: float,
    band: float,
    close: float,
) -> tuple[float, float, int]:
    """One bar of the standard Supertrend band rules; ``direction`` 0 means "first bar"."""
    basic_u = hl2 + band
    basic_l = hl2 - band
    if direction == 0:
        return basic_u, basic_l, BEARISH
    if not (basic_u < upper or prev_close > upper):
        basic_u = upper
    if not (basic_l > lower or prev_close < lower):
        basic_l = lower
    if direction == BEARISH:
        direction = BULLISH if close > basic_u else BEARISH
    else:
        direction = BEARISH if close < basic_l else BULLISH
    return basic_u, basic_l, direction


class Supertrend(msgspec.Struct, kw_only=True):
    """Classic Supertrend: ``hl2 +/- multiplier * ATR(period)`` with flip/ratchet rules.

    ``direction`` is +1 bullish, -1 bearish, 0 before the ATR is ready; ``value`` is the line
    (lower band when bullish, upper band when bearish).
    """

    period: int
    multiplier: float
    atr: Atr
    prev_close: float = 0.0
    upper: float = 0.0
    lower: float = 0.0
    direction: int = 0
    value: float | None = None

    @classmethod
    def new(cls, period: int, multiplier: float) -> Supertrend:
        return cls(period=period, multiplier=multiplier, atr=Atr(period=period))

    @property
    def ready(self) -> bool:
        return self.direction != 0

    def update(self, high: float, low: float, close: float) -> int:
        """Feed one bar; returns the direction after it (0 while not ready)."""
        atr = self.atr.update(high, low, close)
        if atr is not None:
            u, lo, d = _band_step(
                self.upper,
                self.lower,
                self.direction,
                self.prev_close,
                (high + low) * 0.5,
                self.multiplier * atr,
                close,
            )
            self.upper, self.lower, self.direction = u, lo, d
            self.value = lo if d == BULLISH else u
        self.prev_close = close
        return self.direction


def _mean(xs: list[float]) -> float:
    return math.fsum(xs) / len(xs)


def _pstdev(xs: list[float]) -> float:
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) * (x - m) for x in xs) / len(xs))


def _rms(xs: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in xs) / len(xs))


def kmeans_deterministic(
    points: list[tuple[float, ...]], k: int, max_iter: int = 20
) -> tuple[list[int], list[list[float]]]:
    """Lloyd's k-means with a deterministic start; returns (assignment, centroids).

    Initial centroid j is the point at position ``floor((j + 0.5) * N / k)`` of the points
    sorted by their first feature (ties by position): the quantiles of the first feature, so
    centroids start spread from low to high. Distance ties go to the lower cluster index; an
    empty cluster keeps its centroid. Distances are Euclidean (``math.dist``). Stops when no
    assignment changes or after ``max_iter`` assignment rounds.
    """
    n = len(points)
    k = min(k, n)
    order = sorted(range(n), key=lambda i: (points[i][0], i))
    cents = [tuple(points[order[(2 * j + 1) * n // (2 * k)]]) for j in range(k)]
    dist = math.dist
    assign: list[int] = []
    for _ in range(max_iter):
        new: list[int] = []
        for pt in points:
            best, best_d = 0, dist(pt, cents[0])
            for j in range(1, k):
                d = dist(pt, cents[j])
                if d < best_d:
                    best, best_d = j, d
            new.append(best)
        if new == assign:
            break
        assign = new
        for j in range(k):
            members = [pt for pt, a in zip(points, assign, strict=True) if a == j]
            if members:
                m = len(members)
                cents[j] = tuple(sum(col) / m for col in zip(*members, strict=True))
    return assign, [list(c) for c in cents]


class AdaptiveSupertrend(msgspec.Struct, kw_only=True):
    """The original system's adaptive Supertrend, made deterministic.

    As in the original (``Indicators::Supertrend``):

    - ATR: TR as usual; the first value at bar ``period`` is the mean TR[1..period]; then an EMA
      with alpha = max(0.05, 0.2 / (1 + vol_factor)), vol_factor = RMS of the last 20
      close-to-close returns / RMS of the last 100 (1.0 until 20 returns exist).
    - Features per bar: ATR normalised by its mean over the training window, the population
      standard deviation of the last 10 returns x 100, and (close - SMA10) / SMA10 x 100.
    - k-means over the last ``training_period`` feature rows (k = ``num_clusters``, <= 20
      iterations); the current bar's cluster picks the allowed multiplier candidates: the
      lowest-volatility cluster allows c <= base + 0.5, the highest c >= base + 0.5, the others
      base <= c <= base + 1 (an empty set allows all).
    - Among the allowed candidates the one with the best running performance score wins. Each
      candidate runs a shadow Supertrend on the same ATR; when it flips, the next bar's close
      either continues in the flip direction (1) or not (0); the score is an EMA (alpha
      ``performance_alpha``, start 0.5) of the mean of the last 5 such outcomes.
    - The line is ``hl2 +/- m_t * ATR`` with the standard band rules, m_t varying per bar (the
      base multiplier until the training window is full). Ready once the window is full.

    Made deterministic (the original seeded k-means from random samples):

    - the features are z-scored over the window (a constant feature scores 0), so no feature
      dominates the distance by its scale;
    - k-means starts from quantiles of the first feature (see :func:`kmeans_deterministic`);
    - clusters are ranked by their centroid's normalised ATR after convergence, so "cluster 0"
      always means the calmest regime (with random seeding the labels were arbitrary);
    - score ties go to the candidate closest to the base multiplier, then the smaller one.
    """

    period: int
    base_multiplier: float
    training_period: int
    num_clusters: int
    performance_alpha: float
    candidates: list[float]
    n: int = 0
    prev_close: float = 0.0
    tr_sum: float = 0.0
    atr: float | None = None
    returns: list[float] = msgspec.field(default_factory=list)
    closes: list[float] = msgspec.field(default_factory=list)
    win_atr: list[float] = msgspec.field(default_factory=list)
    win_vol: list[float] = msgspec.field(default_factory=list)
    win_dev: list[float] = msgspec.field(default_factory=list)
    sh_upper: list[float] = msgspec.field(default_factory=list)
    sh_lower: list[float] = msgspec.field(default_factory=list)
    sh_dir: list[int] = msgspec.field(default_factory=list)
    sh_pending: list[int] = msgspec.field(default_factory=list)
    sh_outcomes: list[list[int]] = msgspec.field(default_factory=list)
    scores: list[float] = msgspec.field(default_factory=list)
    upper: float = 0.0
    lower: float = 0.0
    band_dir: int = 0
    multiplier: float = 0.0
    regime: int = -1
    direction: int = 0
    value: float | None = None

    @classmethod
    def new(
        cls,
        period: int,
        base_multiplier: float,
        training_period: int,
        num_clusters: int,
        performance_alpha: float,
        candidates: list[float],
    ) -> AdaptiveSupertrend:
        m = len(candidates)
        return cls(
            period=period,
            base_multiplier=base_multiplier,
            training_period=training_period,
            num_clusters=num_clusters,
            performance_alpha=performance_alpha,
            candidates=list(candidates),
            sh_upper=[0.0] * m,
            sh_lower=[0.0] * m,
            sh_dir=[0] * m,
            sh_pending=[0] * m,
            sh_outcomes=[[] for _ in range(m)],
            scores=[0.5] * m,
            multiplier=base_multiplier,
        )

    @property
    def ready(self) -> bool:
        return self.direction != 0

    def update(self, high: float, low: float, close: float) -> int:
        """Feed one bar; returns the direction after it (0 while not ready)."""
        n = self.n
        self.n = n + 1
        prev_close = self.prev_close
        self.prev_close = close
        if n == 0:
            self.closes.append(close)
            return 0
        self._push(self.returns, close / prev_close - 1.0 if prev_close else 0.0, 100)
        self._push(self.closes, close, 11)
        atr = self._update_atr(true_range(high, low, prev_close), n)
        if atr is None:
            return 0
        hl2 = (high + low) * 0.5
        self._score_candidates(hl2, atr, close, prev_close)
        if len(self.closes) >= 11:
            closes10 = self.closes[-10:]
            sma10 = _mean(closes10)
            tp = self.training_period
            self._push(self.win_atr, atr, tp)
            self._push(self.win_vol, _pstdev(self.returns[-10:]) * 100.0, tp)
            self._push(self.win_dev, (close - sma10) / sma10 * 100.0 if sma10 else 0.0, tp)
            if len(self.win_atr) >= tp:
                self.multiplier = self._select_multiplier()
        self.upper, self.lower, self.band_dir = _band_step(
            self.upper,
            self.lower,
            self.band_dir,
            prev_close,
            hl2,
            self.multiplier * atr,
            close,
        )
        if len(self.win_atr) >= self.training_period:
            self.direction = self.band_dir
            self.value = self.lower if self.band_dir == BULLISH else self.upper
        return self.direction

    @staticmethod
    def _push(xs: list, x: object, cap: int) -> None:  # type: ignore[type-arg]
        xs.append(x)
        if len(xs) > cap:
            del xs[0]

    def _update_atr(self, tr: float, n: int) -> float | None:
        if self.atr is None:
            self.tr_sum += tr
            if n >= self.period:
                self.atr = self.tr_sum / self.period
            return self.atr
        vol_factor = 1.0
        if len(self.returns) >= 20:
            long_rms = _rms(self.returns)
            if long_rms > 0:
                vol_factor = _rms(self.returns[-20:]) / long_rms
        alpha = max(0.05, 0.2 / (1.0 + vol_factor))
        self.atr = self.atr + alpha * (tr - self.atr)
        return self.atr

    def _score_candidates(self, hl2: float, atr: float, close: float, prev_close: float) -> None:
        alpha = self.performance_alpha
        for i, m in enumerate(self.candidates):
            pending = self.sh_pending[i]
            if pending:
                outcomes = self.sh_outcomes[i]
                self._push(outcomes, 1 if (close - prev_close) * pending > 0 else 0, 5)
                acc = sum(outcomes) / len(outcomes)
                self.scores[i] += alpha * (acc - self.scores[i])
            old = self.sh_dir[i]
            u, lo, d = _band_step(
                self.sh_upper[i],
                self.sh_lower[i],
                old,
                prev_close,
                hl2,
                m * atr,
                close,
            )
            self.sh_upper[i], self.sh_lower[i], self.sh_dir[i] = u, lo, d
            self.sh_pending[i] = d if old != 0 and d != old else 0

    def _select_multiplier(self) -> float:
        a_mean = _mean(self.win_atr)
        cols = [
            [x / a_mean if a_mean else 1.0 for x in self.win_atr],
            list(self.win_vol),
            list(self.win_dev),
        ]
        for col in cols:
            m = _mean(col)
            sd = _pstdev(col)
            col[:] = [(x - m) / sd if sd > 0 else 0.0 for x in col]
        points = list(zip(*cols, strict=True))
        assign, cents = kmeans_deterministic(points, self.num_clusters)
        k = len(cents)
        ranked = sorted(range(k), key=lambda j: (cents[j][0], j))
        rank = ranked.index(assign[-1])
        self.regime = rank
        base = self.base_multiplier
        if rank == 0:
            allowed = [i for i, c in enumerate(self.candidates) if c <= base + 0.5]
        elif rank == k - 1:
            allowed = [i for i, c in enumerate(self.candidates) if c >= base + 0.5]
        else:
            allowed = [i for i, c in enumerate(self.candidates) if base <= c <= base + 1.0]
        if not allowed:
            allowed = list(range(len(self.candidates)))
        best = min(
            allowed,
            key=lambda i: (-self.scores[i], abs(self.candidates[i] - base), self.candidates[i]),
        )
        return self.candidates[best]
