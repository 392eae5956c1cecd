/** C0 controls but tab and newline, DEL and C1 controls: what a terminal may act on rather than show. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g

/**
 * `text` with every terminal control character shown as `\xNN` instead of sent. What the CLI prints
 * quotes the edge (problem details, error pages, yank reasons, rollout halt reasons) and whoever
 * answers for it chooses those bytes: an ESC sequence would otherwise reach the maintainer's or
 * operator's terminal (rewrite what was printed, set the clipboard through OSC 52, retitle the window).
 * Every human-readable line goes through it; `--json` output goes through jsonLine.
 */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** DEL and C1 controls, which JSON.stringify leaves raw (it escapes only C0). */
const RAW_IN_JSON = /[\u007f-\u009f]/g

/**
 * One JSON document as a line, with no character a terminal may act on: JSON.stringify escapes C0, and
 * DEL and C1 (U+009B is a one-character CSI) are written as `\u00XX` too, which parses to the same
 * string. `--json` output quotes the edge as well, and is often read on a terminal.
 */
export function jsonLine(value: unknown): string {
  const text = JSON.stringify(value).replace(
    RAW_IN_JSON,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
  return `${text}\n`
}

/**
 * How the CLI talks: a redrawn progress line on a TTY, plain lines when piped, and with `--json`
 * exactly one JSON document per command on stdout (errors included) so scripts never parse prose.
 */
export class Reporter {
  readonly json: boolean
  private readonly tty: boolean
  private lastLine = 0
  private lastPlain = 0
  private readonly started = Date.now()

  constructor(json: boolean, tty = Boolean(process.stderr.isTTY)) {
    this.json = json
    this.tty = tty && !json
  }

  info(message: string): void {
    if (!this.json) process.stderr.write(`${printable(message)}\n`)
  }

  progress(label: string, done: number, total: number): void {
    if (this.json) return
    const now = Date.now()
    const elapsed = Math.max((now - this.started) / 1000, 0.001)
    const rate = done / elapsed
    const eta = rate > 0 ? (total - done) / rate : 0
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100
    const text = `${label} ${formatBytes(done)}/${formatBytes(total)} ${pct}% ${formatBytes(rate)}/s ETA ${eta.toFixed(0)}s`
    if (this.tty) {
      if (now - this.lastLine < 100 && done < total) return
      this.lastLine = now
      const width = 24
      const filled = Math.round((pct / 100) * width)
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}\u001b[K`)
      if (done >= total) process.stderr.write('\n')
    } else if (now - this.lastPlain > 2000 || done >= total) {
      this.lastPlain = now
      process.stderr.write(`${text}\n`)
    }
  }

  result(summary: string, data: Record<string, unknown>): void {
    if (this.json) process.stdout.write(jsonLine({ ok: true, ...data }))
    else process.stdout.write(`${printable(summary)}\n`)
  }

  failure(code: string, message: string, details: Record<string, unknown> = {}): void {
    if (this.json) process.stdout.write(jsonLine({ ok: false, error: { code, message, ...details } }))
    else process.stderr.write(`deltaport: ${printable(message)}\n`)
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}
