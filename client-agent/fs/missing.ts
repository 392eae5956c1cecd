/**
 * `fallback` when `operation` fails because the path does not exist (yet): the normal state of a
 * fresh store. Every other failure — a store root that is a file, no permission, a disk error — is
 * the machine's state the user must hear about, so it propagates (the CLI reports it as `io`).
 */
export async function unlessMissing<T>(
  operation: Promise<T>,
  fallback: T,
  alsoMissing: string[] = [],
): Promise<T> {
  try {
    return await operation
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code
    if (code === 'ENOENT' || (code !== undefined && alsoMissing.includes(code))) return fallback
    throw error
  }
}
