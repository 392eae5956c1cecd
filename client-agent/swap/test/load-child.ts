/**
 * Load generator process for the swap proof test and bench/swap: autocannon at a bounded rate on loopback,
 * alternating writes and reads per connection. Each connection is one client with its own id and
 * sequence numbers; a write refused with 503 is retried with the same number after its Retry-After.
 * Usage: node load-child.ts <url> <overallRate> <connections> [clientPrefix]. Clients are named
 * <prefix>-0, <prefix>-1, … Prints {"ready":true}, runs until stdin closes, then one LoadResult JSON line.
 */
import autocannon from 'autocannon'

interface ClientContext {
  client?: string
  seq: number
  pending: number | null
  retryAt: number
  n: number
  lastWrite: boolean
}

const [url, rateArg, connectionsArg, prefixArg] = process.argv.slice(2)
const prefix = prefixArg ?? `load-${process.pid}`
if (!url || !rateArg || !connectionsArg) {
  console.error('usage: load-child.ts <url> <overallRate> <connections>')
  process.exit(2)
}
let nextClient = 0
const acks: Record<string, number[]> = {}
const protocolErrors: string[] = []
/** [end time ms, latency ms, status] per response. */
const samples: Array<[number, number, number]> = []
let reqErrors = 0

function setupRequest(req: autocannon.Request, context: ClientContext): autocannon.Request {
  if (!context.client) {
    context.client = `${prefix}-${nextClient++}`
    context.seq = 0
    context.pending = null
    context.retryAt = 0
    context.n = 0
  }
  context.n += 1
  const client = context.client
  if (context.n % 2 === 1 && Date.now() >= context.retryAt) {
    if (context.pending === null) context.pending = ++context.seq
    context.lastWrite = true
    return {
      ...req,
      method: 'POST',
      path: '/write',
      headers: { 'x-client-id': client, 'content-type': 'application/json', authorization: 'Bearer load' },
      body: JSON.stringify({ seq: context.pending, data: 'x'.repeat(64) }),
    }
  }
  context.lastWrite = false
  return { ...req, method: 'GET', path: `/state?client=${client}`, headers: { 'x-client-id': client } }
}

function onResponse(status: number, _body: string, context: ClientContext, headers: Record<string, string>) {
  if (!context.lastWrite || !context.client) return
  if (status === 200 && context.pending !== null) {
    const list = acks[context.client] ?? []
    list.push(context.pending)
    acks[context.client] = list
    context.pending = null
  } else if (status === 503) {
    context.retryAt = Date.now() + Number(headers['retry-after'] ?? 1) * 1000
  } else {
    protocolErrors.push(`${context.client} seq ${context.pending}: HTTP ${status}`)
    context.pending = null
  }
}

const request = { setupRequest, onResponse } as autocannon.Request
const instance = (autocannon as unknown as (o: autocannon.Options) => autocannon.Instance)({
  url,
  connections: Number(connectionsArg),
  overallRate: Number(rateArg),
  duration: 3600,
  timeout: 30,
  // One long list so autocannon never loops back to the first request (which resets each context).
  requests: new Array<autocannon.Request>(100_000).fill(request),
})
instance.on('response', (_client: unknown, status: number, _bytes: number, latency: number) => {
  samples.push([Date.now(), latency, status])
})
instance.on('reqError', () => {
  reqErrors += 1
})
instance.on('done', (result: autocannon.Result) => {
  process.stdout.write(
    `${JSON.stringify({
      requests: result.requests.total,
      errors: result.errors,
      timeouts: result.timeouts,
      resets: result.resets,
      reqErrors,
      statuses: {
        '1xx': result['1xx'],
        '2xx': result['2xx'],
        '3xx': result['3xx'],
        '4xx': result['4xx'],
        '5xx': result['5xx'],
      },
      acks,
      protocolErrors: protocolErrors.slice(0, 50),
      protocolErrorCount: protocolErrors.length,
      samples,
    })}\n`,
    () => process.exit(0),
  )
})
process.stdin.on('end', () => instance.stop())
process.stdin.resume()
process.stdout.write('{"ready":true}\n')
