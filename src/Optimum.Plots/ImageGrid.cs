using Optimum.Core;
using SkiaSharp;

namespace Optimum.Plots;

/// <summary>PNG grids of images such as a diffusion model's samples.</summary>
public static class ImageGrid
{
    /// <summary>
    /// Writes <paramref name="n"/> images of (<paramref name="c"/>, <paramref name="h"/>, <paramref name="w"/>), row-major
    /// (N, C, H, W) in [−1, 1], as one PNG, atomically: <paramref name="columns"/> per row (0: ⌈√n⌉), each pixel drawn
    /// <paramref name="scale"/>×<paramref name="scale"/>, <paramref name="padding"/> black pixels between and around them.
    /// Values map as diffusers' numpy_to_pil does: round(clamp(v/2 + 0.5, 0, 1)·255); 1 channel is grayscale, 3 are RGB.
    /// </summary>
    public static void Save(float[] images, int n, int c, int h, int w, string path, int columns = 0, int scale = 1, int padding = 2) =>
        AtomicFile.Write(path, EncodePng(images, n, c, h, w, columns, scale, padding));

    /// <summary>
    /// The PNG file that <see cref="Save"/> writes, as bytes in memory (e.g. for base64 in a response); with
    /// <paramref name="n"/> = 1 and <paramref name="padding"/> = 0 it is one image at its own size.
    /// </summary>
    public static byte[] EncodePng(ReadOnlySpan<float> images, int n, int c, int h, int w, int columns = 0, int scale = 1, int padding = 2)
    {
        if (c is not (1 or 3)) throw new ArgumentException($"Images with {c} channels cannot be drawn; a grid takes 1 (grayscale) or 3 (RGB).", nameof(c));
        if (n < 1 || h < 1 || w < 1 || (long)n * c * h * w != images.Length)
            throw new ArgumentException($"{images.Length} values are not {n} images of ({c}, {h}, {w}).", nameof(images));
        if (columns < 0 || scale < 1 || padding < 0)
            throw new ArgumentOutOfRangeException(nameof(columns), $"columns {columns} (0 = auto), scale {scale} (>= 1) and padding {padding} (>= 0) are out of range.");
        int cols = columns == 0 ? (int)Math.Ceiling(Math.Sqrt(n)) : Math.Min(columns, n), rows = (n + cols - 1) / cols;
        int cellW = w * scale, cellH = h * scale;
        int width = cols * cellW + (cols + 1) * padding, height = rows * cellH + (rows + 1) * padding;
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, c == 1 ? SKColorType.Gray8 : SKColorType.Rgba8888, SKAlphaType.Opaque));
        var pixels = new byte[bitmap.RowBytes * height];
        int bpp = c == 1 ? 1 : 4;
        if (bpp == 4) for (int i = 3; i < pixels.Length; i += 4) pixels[i] = 255;
        int plane = h * w;
        for (int k = 0; k < n; k++)
        {
            int x0 = padding + k % cols * (cellW + padding), y0 = padding + k / cols * (cellH + padding);
            for (int y = 0; y < cellH; y++)
                for (int x = 0; x < cellW; x++)
                {
                    int src = k * c * plane + y / scale * w + x / scale, dst = (y0 + y) * bitmap.RowBytes + (x0 + x) * bpp;
                    for (int ch = 0; ch < c; ch++) pixels[dst + ch] = ToByte(images[src + ch * plane]);
                }
        }
        System.Runtime.InteropServices.Marshal.Copy(pixels, 0, bitmap.GetPixels(), pixels.Length);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>A [−1, 1] value as a byte: round(clamp(v/2 + 0.5, 0, 1)·255), NaN as 0.</summary>
    public static byte ToByte(float v)
    {
        float u = Math.Clamp(v / 2 + 0.5f, 0f, 1f);
        return float.IsNaN(u) ? (byte)0 : (byte)MathF.Round(u * 255f, MidpointRounding.ToEven);
    }
}
