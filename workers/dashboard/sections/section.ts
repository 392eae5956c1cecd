/**
 * Every dashboard section loads on its own: a failing or slow data source becomes an inline error in
 * its box, never a broken page.
 */
export type Section<T> = { ok: true; data: T } | { ok: false; error: string }

/** Upper bound for one section's data; the page is rendered with whatever answered in time. */
export const SECTION_TIMEOUT_MS = 5000

export async function loadSection<T>(
  name: string,
  load: () => Promise<T>,
  timeoutMs = SECTION_TIMEOUT_MS,
): Promise<Section<T>> {
  let timer: ReturnType<typeof setTimeout> | null = null
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    return { ok: true, data: await Promise.race([load(), timeout]) }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    console.log(
      JSON.stringify({ level: 'warn', msg: 'dashboard section failed', section: name, error: message }),
    )
    return { ok: false, error: message.slice(0, 500) }
  } finally {
    if (timer !== null) clearTimeout(timer)
  }
}
