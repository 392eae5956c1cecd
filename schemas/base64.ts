/** Standard base64 (RFC 4648 §4) to and from bytes, with WebCrypto-era globals only (atob, btoa). */

/** Standard base64 to bytes; null when it is not base64. */
export function base64Bytes(text: string): Uint8Array<ArrayBuffer> | null {
  let binary: string
  try {
    binary = atob(text)
  } catch {
    return null
  }
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

/** Bytes as standard base64, the form keys and signatures are written in. */
export function bytesBase64(bytes: Uint8Array): string {
  let binary = ''
  for (const b of bytes) binary += String.fromCharCode(b)
  return btoa(binary)
}
