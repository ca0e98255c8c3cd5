namespace Optimum.Inference.Quantization;

/// <summary>
/// A weight matrix quantized block-wise along K in ONNX Runtime's <c>com.microsoft.MatMulNBits</c> layout: row n of
/// Wᵀ (N rows of K) is cut into ceil(K / block) blocks (the last one padded with zeros); each block has a float scale and
/// a zero point, and a weight is <c>(code - zero_point) * scale</c>. <see cref="Packed"/> is [N, blocks, block*bits/8]
/// with codes packed low bits first; <see cref="Scales"/> is [N * blocks]; <see cref="ZeroPoints"/> is null for symmetric
/// quantization (the operator's default zero point 2^(bits-1)), else [N * ceil(blocks*bits/8)] packed the same way.
/// </summary>
public sealed record QuantizedMatrix(int N, int K, int Bits, int BlockSize, byte[] Packed, float[] Scales, byte[]? ZeroPoints)
{
    public int BlocksPerRow => (K + BlockSize - 1) / BlockSize;
    public int BlobSize => BlockSize * Bits / 8;
    public int ZeroPointBytesPerRow => (BlocksPerRow * Bits + 7) / 8;

    /// <summary>The code of element (n, k), 0 .. 2^bits-1.</summary>
    public int Code(int n, int k)
    {
        int b = k / BlockSize, i = k % BlockSize;
        long at = ((long)n * BlocksPerRow + b) * BlobSize;
        return Bits == 8 ? Packed[at + i] : (Packed[at + i / 2] >> (4 * (i & 1))) & 0xF;
    }

    /// <summary>The zero point of block b of row n.</summary>
    public int ZeroPoint(int n, int b)
    {
        if (ZeroPoints is null) return 1 << (Bits - 1);
        long at = (long)n * ZeroPointBytesPerRow;
        return Bits == 8 ? ZeroPoints[at + b] : (ZeroPoints[at + b / 2] >> (4 * (b & 1))) & 0xF;
    }

    public float Scale(int n, int b) => Scales[(long)n * BlocksPerRow + b];

    /// <summary>The weights back as floats, row-major [N, K] (Wᵀ, as quantized).</summary>
    public float[] Dequantize()
    {
        var w = new float[(long)N * K];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++)
                w[(long)n * K + k] = (Code(n, k) - ZeroPoint(n, k / BlockSize)) * Scale(n, k / BlockSize);
        return w;
    }
}

/// <summary>Block-wise weight quantization (round to nearest), in C#, for <see cref="QuantizedMatrix"/>.</summary>
public static class BlockQuantizer
{
    /// <summary>
    /// Quantizes <paramref name="wt"/>, row-major [N, K] (the transposed weight of <c>Y = X W</c>, W being [K, N]).
    /// Symmetric (<paramref name="zeroPoints"/> false): scale = max|w| / (2^(bits-1) - 1), codes centred on 2^(bits-1).
    /// With zero points: the block's range widened to hold 0, scale = (max - min) / (2^bits - 1), zero point = round(-min / scale).
    /// Either way every weight is within half a scale of its dequantized value.
    /// </summary>
    public static QuantizedMatrix Quantize(float[] wt, int n, int k, int bits, int blockSize, bool zeroPoints)
    {
        if (bits is not (4 or 8)) throw new ArgumentOutOfRangeException(nameof(bits), bits, "MatMulNBits weights are 4 or 8 bits here.");
        CheckBlockSize(blockSize);
        if (wt.Length != (long)n * k) throw new ArgumentException($"{wt.Length} weights for a [{n}, {k}] matrix.", nameof(wt));
        int blocks = (k + blockSize - 1) / blockSize, blob = blockSize * bits / 8, levels = (1 << bits) - 1;
        int zpRow = (blocks * bits + 7) / 8;
        var packed = new byte[(long)n * blocks * blob];
        var scales = new float[(long)n * blocks];
        var zps = zeroPoints ? new byte[(long)n * zpRow] : null;
        Parallel.For(0, n, row =>
        {
            var r = wt.AsSpan(row * k, k);
            for (int b = 0; b < blocks; b++)
            {
                int start = b * blockSize, end = Math.Min(k, start + blockSize);
                float scale; int zp;
                if (zeroPoints)
                {
                    float lo = 0, hi = 0;
                    for (int i = start; i < end; i++) { lo = Math.Min(lo, r[i]); hi = Math.Max(hi, r[i]); }
                    scale = (hi - lo) / levels;
                    zp = scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-lo / scale), 0, levels);
                }
                else
                {
                    float amax = 0;
                    for (int i = start; i < end; i++) amax = Math.Max(amax, MathF.Abs(r[i]));
                    scale = amax / ((1 << (bits - 1)) - 1);
                    zp = 1 << (bits - 1);
                }
                scales[(long)row * blocks + b] = scale;
                if (zps is not null)
                {
                    long at = (long)row * zpRow + (bits == 8 ? b : b / 2);
                    zps[at] |= (byte)(bits == 8 ? zp : zp << (4 * (b & 1)));
                }
                long blobAt = ((long)row * blocks + b) * blob;
                for (int i = 0; i < blockSize; i++)
                {
                    float v = start + i < end ? r[start + i] : 0f;
                    int q = scale == 0 ? zp : Math.Clamp((int)MathF.Round(v / scale) + zp, 0, levels);
                    if (bits == 8) packed[blobAt + i] = (byte)q;
                    else packed[blobAt + i / 2] |= (byte)(q << (4 * (i & 1)));
                }
            }
        });
        return new QuantizedMatrix(n, k, bits, blockSize, packed, scales, zps);
    }

    /// <summary>Block sizes MatMulNBits' CPU kernels take: a power of two, at least 16.</summary>
    public static void CheckBlockSize(int blockSize)
    {
        if (blockSize < 16 || (blockSize & (blockSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, $"The block size must be a power of two >= 16 (16, 32, 64, 128, 256); got {blockSize}.");
    }
}
