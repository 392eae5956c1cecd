import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings, type SwapSettingsInput } from '../../../schemas/swap.ts'
import { type Responder, WriteBuffer } from '../buffer.ts'
import { SwapJournal } from '../journal.ts'
import { type BufferedRequest, loadValidator, validateWrite } from '../validator.ts'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-buffer-'))
  dirs.push(dir)
  return dir
}

/** Records what the held client was answered. */
function recorder(): Responder & { answers: Array<{ status: number; body: string }> } {
  const answers: Array<{ status: number; body: string }> = []
  return {
    answers,
    gone: false,
    send(status, _headers, body) {
      answers.push({ status, body: Buffer.from(body).toString() })
    },
  }
}

const request = (client: string, body: string, headers: Array<[string, string]> = []): BufferedRequest => ({
  method: 'POST',
  path: '/write',
  headers: [['x-client-id', client], ...headers],
  body: Buffer.from(body),
  client,
})

async function makeBuffer(input: SwapSettingsInput, validator: Parameters<typeof validateWrite>[2] = null) {
  const journal = new SwapJournal(join(await tempDir(), 'swap.journal'))
  await journal.open()
  return { journal, buffer: new WriteBuffer(SwapSettings.parse(input), journal, validator) }
}

describe('write buffer', () => {
  it('keeps bodies in memory up to the cap, then only in the journal, and reads them back', async () => {
    const { buffer, journal } = await makeBuffer({ memoryBytes: 10, writeAhead: false })
    const small = await buffer.hold(request('a', '12345678'), null)
    const big = await buffer.hold(request('a', 'this one does not fit'), null)
    expect(small.journaled).toBe(false)
    expect(small.body).not.toBeNull()
    expect(big.journaled).toBe(true)
    expect(big.body).toBeNull()
    expect(Buffer.from(await buffer.bodyOf(big)).toString()).toBe('this one does not fit')
    expect(buffer.stats()).toMatchObject({ writes: 2, memoryBytes: 8, journaled: 1 })
    await journal.close()
  })

  it('keeps recovered bodies in memory only up to memoryBytes, and reads the rest back, also after a compaction', async () => {
    const path = join(await tempDir(), 'swap.journal')
    const before = new SwapJournal(path)
    await before.open()
    const body = (id: number) => String(id).repeat(300 * 1024)
    for (let id = 1; id <= 4; id++) {
      await before.append({
        t: 'w',
        id,
        client: 'a',
        method: 'POST',
        path: '/write',
        headers: [],
        body: Buffer.from(body(id)).toString('base64'),
        at: id,
      })
    }
    await before.close()
    // An agent restarted with four 300 KiB writes owed and half a MiB of memory for bodies.
    const journal = new SwapJournal(path)
    const recovered = await journal.open()
    const buffer = new WriteBuffer(SwapSettings.parse({ memoryBytes: 512 * 1024 }), journal, null)
    buffer.restore(recovered.pending)
    expect(buffer.stats()).toMatchObject({ writes: 4, bytes: 4 * 300 * 1024, memoryBytes: 300 * 1024 })
    const held = [...(buffer.clientQueues.get('a') ?? [])]
    expect(held.map((e) => e.body === null)).toEqual([false, true, true, true])
    // The first is answered; the journal compacts (the others move in the file) and the rest read back.
    await buffer.complete(held[0]!, 200, [], Buffer.alloc(0))
    await journal.compact()
    for (const entry of held.slice(1))
      expect(Buffer.from(await buffer.bodyOf(entry)).toString()).toBe(body(entry.id))
    await journal.close()
  })

  it("records the service's status when its client hears another (an answer too large to pass on)", async () => {
    const { buffer, journal } = await makeBuffer({ writeAhead: true })
    const client = recorder()
    const held = await buffer.hold(request('a', '1'), client)
    await buffer.complete(held, 502, [], Buffer.from('too large'), 201)
    expect(client.answers).toEqual([{ status: 502, body: 'too large' }])
    await journal.close()
    // The frames (u32 LE length, u32 LE CRC, JSON): the `done` record carries the service's status.
    const bytes = await readFile(journal.path)
    const done: unknown[] = []
    for (let at = 0; at + 8 <= bytes.length; at += 8 + bytes.readUInt32LE(at)) {
      const record = JSON.parse(bytes.subarray(at + 8, at + 8 + bytes.readUInt32LE(at)).toString())
      if (record.t === 'd') done.push(record)
    }
    expect(done).toEqual([{ t: 'd', id: held.id, status: 201 }])
  })

  it('with write-ahead, journals every held write and replays only those not answered', async () => {
    const { buffer, journal } = await makeBuffer({ writeAhead: true })
    const first = await buffer.hold(request('a', '1'), recorder())
    await buffer.hold(request('a', '2'), recorder())
    await buffer.complete(first, 200, [], Buffer.from('ok'))
    await journal.close()
    const again = new SwapJournal(journal.path)
    expect((await again.open()).pending.map((w) => Buffer.from(w.body ?? '', 'base64').toString())).toEqual([
      '2',
    ])
    await again.close()
  })

  it('keeps each client FIFO and answers a completed write with the real response', async () => {
    const { buffer, journal } = await makeBuffer({})
    const r = recorder()
    const a1 = await buffer.hold(request('a', 'a1'), r)
    await buffer.hold(request('b', 'b1'), null)
    await buffer.hold(request('a', 'a2'), null)
    expect(buffer.clientQueues.get('a')!.map((w) => w.id)).toEqual([a1.id, a1.id + 2])
    await buffer.complete(a1, 201, [['x-from', 'service']], Buffer.from('created'))
    expect(r.answers).toEqual([{ status: 201, body: 'created' }])
    expect(buffer.hasPending('a')).toBe(true)
    await journal.close()
  })

  it('settles a client’s writes held so far without waiting for the ones it holds later', async () => {
    const { buffer, journal } = await makeBuffer({})
    await buffer.heldSoFarSettled('a') // nothing held: at once
    const a1 = await buffer.hold(request('a', 'a1'), null)
    const a2 = await buffer.hold(request('a', 'a2'), null)
    let settled = false
    const waiting = buffer.heldSoFarSettled('a').then(() => {
      settled = true
    })
    await buffer.complete(a1, 200, [], Buffer.from('ok'))
    const a3 = await buffer.hold(request('a', 'a3'), null)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(settled).toBe(false)
    await buffer.complete(a2, 200, [], Buffer.from('ok'))
    await waiting
    // a3, held after the wait began, is still pending.
    expect(buffer.clientQueues.get('a')!.map((w) => w.id)).toEqual([a3.id])
    await journal.close()
  })

  it('answers an invalid write at once (401 without the auth header) and drops it from the queue', async () => {
    const { buffer, journal } = await makeBuffer({ requiredHeader: 'authorization' })
    const r = recorder()
    const entry = await buffer.hold(request('a', 'x'), r)
    await entry.verdict
    await new Promise((resolve) => setImmediate(resolve))
    // Answered without waiting for a replay or a journal write.
    expect(r.answers[0]?.status).toBe(401)
    expect(buffer.hasPending('a')).toBe(false)
    expect(buffer.stats()).toMatchObject({ rejected: 1, writes: 0 })
    await journal.close()
  })

  it('cancels a write whose client went away before it was sent', async () => {
    const { buffer, journal } = await makeBuffer({})
    const entry = await buffer.hold(request('a', 'x'), recorder())
    await buffer.cancel(entry)
    expect(buffer.empty).toBe(true)
    await journal.close()
    const again = new SwapJournal(journal.path)
    expect((await again.open()).pending).toEqual([])
    await again.close()
  })
})

describe('write validation', () => {
  const settings = { maxBodyBytes: 16, requiredHeader: 'authorization', hookTimeoutMs: 5000 }

  it('refuses oversized bodies, missing auth, and whatever the validator module says', async () => {
    expect(
      await validateWrite(request('a', 'x'.repeat(17), [['authorization', 't']]), settings, null),
    ).toMatchObject({ ok: false, status: 413 })
    expect(await validateWrite(request('a', 'x'), settings, null)).toMatchObject({ ok: false, status: 401 })
    expect(await validateWrite(request('a', 'x', [['authorization', '']]), settings, null)).toMatchObject({
      ok: false,
      status: 401,
    })
    const authed = request('a', '{"seq":1}', [['authorization', 'Bearer t']])
    expect(await validateWrite(authed, settings, null)).toEqual({ ok: true })

    const dir = await tempDir()
    const file = join(dir, 'validator.mjs')
    await writeFile(
      file,
      `export default function (req) {
        const body = JSON.parse(Buffer.from(req.body).toString())
        if (typeof body.seq !== 'number') return { ok: false, status: 400, reason: 'seq must be a number' }
        return body.seq < 100
      }`,
    )
    const validator = await loadValidator(file)
    expect(await validateWrite(authed, settings, validator)).toEqual({ ok: true })
    expect(await validateWrite({ ...authed, body: Buffer.from('{"seq":"x"}') }, settings, validator)).toEqual(
      {
        ok: false,
        status: 400,
        reason: 'seq must be a number',
      },
    )
    expect(
      await validateWrite({ ...authed, body: Buffer.from('{"seq":500}') }, settings, validator),
    ).toMatchObject({
      ok: false,
      status: 422,
    })
    // A validator that throws (here: on a body that is not JSON) refuses rather than crashes.
    expect(await validateWrite({ ...authed, body: Buffer.from('{') }, settings, validator)).toMatchObject({
      ok: false,
      status: 422,
    })
  })

  it('treats a nonsense verdict as a refusal and a module without a default function as a config error', async () => {
    const weird = await validateWrite(
      request('a', 'x'),
      { maxBodyBytes: 10, requiredHeader: null, hookTimeoutMs: 5000 },
      () => ({
        ok: 'yes',
        status: 200,
      }),
    )
    expect(weird).toMatchObject({ ok: false, status: 422 })
    const dir = await tempDir()
    const file = join(dir, 'empty.mjs')
    await writeFile(file, 'export const x = 1\n')
    await expect(loadValidator(file)).rejects.toMatchObject({ code: 'config' })
  })
})
