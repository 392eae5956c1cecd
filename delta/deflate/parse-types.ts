/**
 * A DEFLATE stream taken apart into what its encoder decided: the token sequence (literals and
 * back-references) and the block structure. Together with zlib's tree construction this is enough
 * to re-encode the stream bit for bit (encode.ts), which is how archive deltas rebuild streams that
 * no zlib setting reproduces (GNU gzip, other deflaters): the delta carries the target's tokens,
 * not the search that found them.
 */

/**
 * One token per element: a literal is its byte value (0..255); a back-reference is
 * `(length << 16) | distance` with length 3..258 and distance 1..32768 (always > 255, so the two
 * never collide).
 */
export type Tokens = Uint32Array

export const BLOCK_STORED = 0
export const BLOCK_FIXED = 1
export const BLOCK_DYNAMIC = 2
export type BlockType = typeof BLOCK_STORED | typeof BLOCK_FIXED | typeof BLOCK_DYNAMIC

/**
 * The exact bits of a dynamic block's header after the 3 block-type bits (HLIT, HDIST, HCLEN, the
 * code-length code lengths and the run-length coded code lengths), least significant bit first as
 * DEFLATE packs them.
 */
export interface HeaderBits {
  bytes: Uint8Array
  bitLength: number
}

export interface Block {
  type: BlockType
  final: boolean
  /** Tokens [previous block's end, end) belong to this block; a stored block's tokens are literals. */
  end: number
  /**
   * Dynamic blocks only: the header as sent, when it differs from the header zlib's tree
   * construction gives for this block's tokens (undefined: zlib's, computed by the encoder).
   */
  header?: HeaderBits
}

export interface DeflateParse {
  /** Exactly the stream's tokens (may be a view into a larger buffer). */
  tokens: Tokens
  blocks: Block[]
  /** The inflated content (what the tokens decode to). */
  content: Uint8Array
}
