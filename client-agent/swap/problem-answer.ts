/**
 * The proxy's own answers (not the service's) are problem+json, like the edge's: a client can tell a
 * refusal by the agent from an answer of the service and read why.
 */
import type { ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

export interface ProxyProblem {
  title: string
  status: number
  detail: string
}

export interface ProblemOptions {
  /** Seconds for Retry-After, when a retry may succeed. */
  retryAfter?: number
  /** Close the connection after the answer (its request body was not read). */
  close?: boolean
}

function problemHeaders(options: ProblemOptions): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/problem+json' }
  if (options.retryAfter !== undefined) headers['retry-after'] = String(options.retryAfter)
  if (options.close) headers.connection = 'close'
  return headers
}

export function answerProblem(
  res: ServerResponse,
  problem: ProxyProblem,
  options: ProblemOptions = {},
): void {
  res.writeHead(problem.status, problemHeaders(options))
  res.end(JSON.stringify(problem))
}

/** The 504 of a request the service sent nothing of an answer to for `ms`; `more` adds to its detail. */
export function serviceDidNotAnswer(ms: number, more = ''): ProxyProblem {
  return {
    title: 'the service did not answer',
    status: 504,
    detail: `no answer from the service within ${ms} ms${more}`,
  }
}

/** How long a refused upgrade's connection may stay open after its answer before the proxy closes it. */
export const REFUSED_UPGRADE_LINGER_MS = 5000

/**
 * Refuses an upgrade on its raw socket (node:http hands upgrades over before any ServerResponse exists)
 * and closes it: node:http leaves an upgrade's socket half-open after `end`, so a client that never
 * closes its side would otherwise keep the refused socket for good.
 */
export function refuseUpgrade(
  socket: Duplex,
  statusLine: string,
  retryAfter: number,
  problem: ProxyProblem,
  lingerMs = REFUSED_UPGRADE_LINGER_MS,
): void {
  const body = JSON.stringify(problem)
  const headers = {
    ...problemHeaders({ retryAfter, close: true }),
    'content-length': String(Buffer.byteLength(body)),
  }
  const head = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')
  socket.on('error', () => undefined)
  socket.end(`HTTP/1.1 ${statusLine}\r\n${head}\r\n${body}`)
  setTimeout(() => socket.destroy(), lingerMs).unref()
}
