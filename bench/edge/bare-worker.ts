import { Hono } from 'hono'

/**
 * The bare limit for bench/edge/run.ts: the same R2 range read as the edge's blob route, with none of
 * its work (no manifest lookup, no validation, no conditional requests, no Workers cache). Typed
 * structurally so the Node-side tsconfig checks it without the Workers types.
 */
interface BareObject {
  body: ReadableStream<Uint8Array>
  size: number
}
interface BareBucket {
  get(key: string, options?: { range?: { offset: number; length?: number } }): Promise<BareObject | null>
  put(key: string, value: ArrayBuffer): Promise<unknown>
}
type BareEnv = { Bindings: { ARTIFACTS: BareBucket } }

const app = new Hono<BareEnv>()

app.get('/', (c) => c.text('bare'))

/** Seeding only (run.ts puts the same bytes the edge stores). */
app.put('/o/:key{.+}', async (c) => {
  await c.env.ARTIFACTS.put(c.req.param('key'), await c.req.arrayBuffer())
  return c.body(null, 201)
})

app.get('/o/:key{.+}', async (c) => {
  const match = /^bytes=(\d+)-(\d+)$/.exec(c.req.header('range') ?? '')
  const range = match
    ? { offset: Number(match[1]), length: Number(match[2]) - Number(match[1]) + 1 }
    : undefined
  const object = await c.env.ARTIFACTS.get(c.req.param('key'), range ? { range } : {})
  if (!object) return c.body(null, 404)
  if (!range) return new Response(object.body, { status: 200 })
  const last = range.offset + range.length - 1
  return new Response(object.body, {
    status: 206,
    headers: {
      'content-range': `bytes ${range.offset}-${last}/${object.size}`,
      'content-length': String(range.length),
    },
  })
})

export default app
