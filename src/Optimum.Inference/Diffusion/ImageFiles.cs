using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Plots;

namespace Optimum.Inference.Diffusion;

/// <summary>
/// Files of an image generation: the starting latents read from a safetensors file, and the images written as a PNG
/// grid (<c>images.png</c>) and a tensor (<c>images.safetensors</c>, tensor <c>images</c>, (N, C, H, W) float32 in
/// the model's [−1, 1] space), each atomically.
/// </summary>
public static class ImageFiles
{
    public const string GridFile = "images.png";
    public const string TensorFile = "images.safetensors";
    public const string TensorName = "images";

    /// <summary>
    /// The one tensor of a safetensors file as float32 values and its shape (for <see cref="ImageGenerator.CheckLatentsShape"/>);
    /// a file with no tensor, several, or a non-floating one is refused naming the file.
    /// </summary>
    public static (float[] Values, long[] Shape) ReadLatents(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Latents file '{path}' does not exist.", path);
        using var f = SafeTensorsFile.Open(path);
        if (f.Names.Count != 1)
            throw new InvalidDataException($"'{path}' holds {f.Names.Count} tensors ({string.Join(", ", f.Names)}); latents are a file with exactly one tensor, the starting noise (N, C, H, W).");
        var t = f.Read(f.Names[0]);
        if (t.Type is not (DType.Float or DType.Float16 or DType.BFloat16 or DType.Double))
            throw new InvalidDataException($"'{path}': tensor '{t.Name}' is {t.Type.Name()}; latents are floating-point noise.");
        return (t.ToFloats(), t.Shape);
    }

    /// <summary>
    /// Writes <paramref name="dir"/>/images.safetensors and <paramref name="dir"/>/images.png (a grid of
    /// <paramref name="columns"/> per row, 0 = ⌈√N⌉, each pixel drawn <paramref name="scale"/>×<paramref name="scale"/>).
    /// Returns the paths written; images of other than 1 (grayscale) or 3 (RGB) channels get no PNG (Grid null).
    /// </summary>
    public static (string Tensor, string? Grid) Save(GeneratedImages images, string dir, int columns = 0, int scale = 1)
    {
        if (columns < 0 || scale < 1) throw new ArgumentOutOfRangeException(nameof(columns), $"columns {columns} (0 = auto) and scale {scale} (>= 1) are out of range.");
        Directory.CreateDirectory(dir);
        var tensor = Path.Combine(dir, TensorFile);
        var grid = images.Channels is 1 or 3 ? Path.Combine(dir, GridFile) : null;
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (images.Labels is { } labels) metadata["labels"] = string.Join(",", labels);
        // The PNG is encoded before either file is written, so a failure leaves both as they were.
        var png = grid is null ? null : ImageGrid.EncodePng(images.Pixels, images.Count, images.Channels, images.Height, images.Width, columns, scale);
        SafeTensorsFile.Write(tensor, [SafeTensor.FromFloats(TensorName, images.Pixels, images.Shape)], metadata);
        if (grid is not null) AtomicFile.Write(grid, png);
        return (tensor, grid);
    }
}
