/** Latency samples (ms, sub-millisecond precision) and their summary. */
export class Latencies {
  private buf = new Float64Array(1 << 16);
  private n = 0;

  push(ms: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = ms;
  }

  get count(): number {
    return this.n;
  }

  summary(): LatencySummary {
    if (this.n === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
    const s = this.buf.slice(0, this.n).sort();
    const at = (q: number) => s[Math.min(this.n - 1, Math.max(0, Math.ceil(q * this.n) - 1))];
    let sum = 0;
    for (let i = 0; i < this.n; i++) sum += s[i];
    return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[this.n - 1], mean: sum / this.n };
  }
}

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
