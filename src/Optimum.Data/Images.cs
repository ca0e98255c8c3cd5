using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Hub;
using Optimum.Onnx;

namespace Optimum.Data;

/// <summary>
/// A set of images (N, C, H, W) in the [−1, 1] space diffusion models work in, with optional integer labels.
/// Read from a safetensors file with a tensor <c>images</c> — U8 (0..255) or F32 (in [0, 1]), shaped (N, H, W) or
/// (N, C, H, W) — and optionally <c>labels</c> (N) I64 or I32.
/// </summary>
public sealed record ImageSet(float[] Pixels, long[]? Labels, int Count, int Channels, int Height, int Width)
{
    public const string ImagesTensor = "images";
    public const string LabelsTensor = "labels";

    public int PixelsPerImage => Channels * Height * Width;

    /// <summary>Reads an image safetensors file; a wrong dtype, shape, range or label count is refused naming the file and tensor.</summary>
    public static ImageSet Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Image data '{path}' does not exist.", path);
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"{path}: image data must be a .safetensors file with a tensor '{ImagesTensor}' (N, H, W) or (N, C, H, W), U8 or F32, and optionally '{LabelsTensor}' (N).");
        using var f = SafeTensorsFile.Open(path);
        if (!f.Contains(ImagesTensor)) throw new InvalidDataException($"{path}: no tensor '{ImagesTensor}' (it has {string.Join(", ", f.Names)}).");
        var (type, shape) = f.Info(ImagesTensor);
        if (shape.Length is not (3 or 4) || shape.Any(d => d < 1))
            throw new InvalidDataException($"{path}: tensor '{ImagesTensor}' has shape [{string.Join(", ", shape)}]; expected (N, H, W) or (N, C, H, W).");
        int n = checked((int)shape[0]), c = shape.Length == 4 ? checked((int)shape[1]) : 1, h = checked((int)shape[^2]), w = checked((int)shape[^1]);
        var t = f.Read(ImagesTensor);
        float[] pixels;
        if (type == DType.UInt8) pixels = Array.ConvertAll(t.Data, b => b / 127.5f - 1f);
        else if (type.IsFloating())
        {
            pixels = t.ToFloats();
            for (int i = 0; i < pixels.Length; i++)
            {
                if (!(pixels[i] >= 0 && pixels[i] <= 1))
                    throw new InvalidDataException($"{path}: tensor '{ImagesTensor}' element {i} is {pixels[i]}; float images must be in [0, 1].");
                pixels[i] = 2 * pixels[i] - 1;
            }
        }
        else throw new InvalidDataException($"{path}: tensor '{ImagesTensor}' is {type.Name()}; expected U8 (0..255) or F32 (0..1).");
        long[]? labels = null;
        if (f.Contains(LabelsTensor))
        {
            var (_, ls) = f.Info(LabelsTensor);
            if (ls.Length != 1 || ls[0] != n) throw new InvalidDataException($"{path}: tensor '{LabelsTensor}' has shape [{string.Join(", ", ls)}]; expected [{n}], one label per image.");
            try { labels = f.Read(LabelsTensor).ToInt64s(); }
            catch (InvalidOperationException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
            if (labels.FirstOrDefault(l => l < 0) is var neg && neg < 0) throw new InvalidDataException($"{path}: tensor '{LabelsTensor}' holds the negative label {neg}.");
        }
        return new ImageSet(pixels, labels, n, c, h, w);
    }

    /// <summary>
    /// The image files of <paramref name="paths"/>: files as given, folders as their *.safetensors files in name order;
    /// a missing path or a folder without any is refused naming it.
    /// </summary>
    public static IReadOnlyList<string> Files(IEnumerable<string> paths) => paths.SelectMany(p =>
        Directory.Exists(p)
            ? Directory.GetFiles(p, "*.safetensors").Order(StringComparer.Ordinal).ToArray() is { Length: > 0 } found ? found
                : throw new InvalidDataException($"Folder '{p}' has no .safetensors image files.")
            : File.Exists(p) ? [p] : throw new FileNotFoundException($"Image data '{p}' does not exist.", p)).ToArray();

    /// <summary>Several sets of the same image shape as one (all labelled or none).</summary>
    public static ImageSet Concat(IReadOnlyList<ImageSet> sets, IReadOnlyList<string>? names = null)
    {
        if (sets.Count == 0) throw new ArgumentException("No image sets to join.", nameof(sets));
        var first = sets[0];
        for (int i = 1; i < sets.Count; i++)
        {
            var s = sets[i];
            string name = names?[i] ?? $"set {i}";
            if ((s.Channels, s.Height, s.Width) != (first.Channels, first.Height, first.Width))
                throw new InvalidDataException($"{name}: images are {s.Channels}×{s.Height}×{s.Width}, but {names?[0] ?? "set 0"} has {first.Channels}×{first.Height}×{first.Width}.");
            if ((s.Labels is null) != (first.Labels is null))
                throw new InvalidDataException($"{name}: {(s.Labels is null ? "has no labels" : "has labels")} unlike {names?[0] ?? "set 0"}; label every file or none.");
        }
        return sets.Count == 1 ? first : new ImageSet([.. sets.SelectMany(s => s.Pixels)], first.Labels is null ? null : [.. sets.SelectMany(s => s.Labels!)],
            sets.Sum(s => s.Count), first.Channels, first.Height, first.Width);
    }

    /// <summary>Centres each image on a <paramref name="size"/>×<paramref name="size"/> canvas of −1 (black), e.g. MNIST's 28×28 on 32×32.</summary>
    public ImageSet PadTo(int size)
    {
        if (size < Height || size < Width || (size - Height) % 2 != 0 || (size - Width) % 2 != 0)
            throw new ArgumentException($"Cannot centre {Height}×{Width} images on {size}×{size}: the size must be at least as large and differ by an even number.", nameof(size));
        if (size == Height && size == Width) return this;
        int top = (size - Height) / 2, left = (size - Width) / 2, plane = size * size;
        var px = new float[(long)Count * Channels * plane];
        Array.Fill(px, -1f);
        for (int i = 0; i < Count * Channels; i++)
            for (int y = 0; y < Height; y++)
                Array.Copy(Pixels, (long)i * Height * Width + y * Width, px, (long)i * plane + (y + top) * size + left, Width);
        return this with { Pixels = px, Height = size, Width = size };
    }

    /// <summary>Images <paramref name="rows"/> as a new set.</summary>
    public ImageSet Take(IReadOnlyList<int> rows)
    {
        int per = PixelsPerImage;
        var px = new float[(long)rows.Count * per];
        for (int i = 0; i < rows.Count; i++) Array.Copy(Pixels, (long)rows[i] * per, px, (long)i * per, per);
        return this with { Pixels = px, Labels = Labels is null ? null : rows.Select(r => Labels[r]).ToArray(), Count = rows.Count };
    }

    /// <summary>A seeded shuffle split into (rest, held out) with <paramref name="fraction"/> of the images held out.</summary>
    public (ImageSet Kept, ImageSet HeldOut) Split(double fraction, int seed)
    {
        if (fraction is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "Must be in [0, 1).");
        var order = Enumerable.Range(0, Count).ToArray();
        new Random(seed).Shuffle(order);
        int held = (int)Math.Round(Count * fraction);
        return (Take(order[held..]), Take(order[..held]));
    }

    /// <summary>Writes the set as an image safetensors file (images U8 (N, C, H, W), labels I64); the write is atomic.</summary>
    public void Save(string path)
    {
        var bytes = Array.ConvertAll(Pixels, v => (byte)Math.Clamp(MathF.Round((v + 1) * 127.5f), 0, 255));
        var tensors = new List<SafeTensor> { new(ImagesTensor, DType.UInt8, [Count, Channels, Height, Width], bytes) };
        if (Labels is not null) tensors.Add(SafeTensor.FromInt64s(LabelsTensor, Labels, Count));
        SafeTensorsFile.Write(path, tensors);
    }
}

/// <summary>
/// Images as denoising batches for a diffusion UNet's training graph (the DDPM objective): for each image x₀ a
/// timestep t uniform in [0, T), noise ε ~ N(0, I), <c>sample</c> = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, <c>target</c> = ε, and for
/// class-conditional models <c>class_labels</c>, replaced by the null label with probability <c>labelDropout</c> so that
/// sampling can use classifier-free guidance. t, ε and the dropout are drawn from a seeded counter hash of the sample's
/// position in the run's sample stream, so a run resumes exactly and does not depend on the number of ranks; an image
/// seen again in a later epoch gets fresh noise. Validation samples get fixed noise and timesteps (their own stream).
/// </summary>
public sealed class DiffusionData : IBatchSource
{
    private readonly ImageSet _train, _val;
    private readonly NoiseSchedule _schedule;
    private readonly long? _nullLabel;
    private readonly double _labelDropout;
    private readonly int _seed;
    private readonly bool _conditional;
    private const long TrainStream = 0xD1FF, ValidationStream = 0x7A11;

    /// <param name="train">Training images (labelled when <paramref name="classEmbeddings"/> is set).</param>
    /// <param name="validation">Held-out images.</param>
    /// <param name="schedule">The noise schedule of the model (its scheduler_config.json).</param>
    /// <param name="classEmbeddings">The model's num_class_embeds (null = unconditional).</param>
    /// <param name="labelDropout">Share of training labels replaced by the null label, the last class embedding (classifier-free guidance).</param>
    /// <param name="seed">The run's seed.</param>
    public DiffusionData(ImageSet train, ImageSet validation, NoiseSchedule schedule, int? classEmbeddings, double labelDropout, int seed)
    {
        if (labelDropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(labelDropout), labelDropout, "Label dropout must be in [0, 1).");
        if ((train.Channels, train.Height, train.Width) != (validation.Channels, validation.Height, validation.Width))
            throw new ArgumentException("Training and validation images differ in shape.");
        _conditional = classEmbeddings is not null;
        if (_conditional)
        {
            if (train.Labels is null || validation.Labels is null)
                throw new InvalidDataException($"The model is class-conditional (num_class_embeds {classEmbeddings}) but the images have no '{ImageSet.LabelsTensor}'.");
            // The last class embedding always stands for "no label" (what the samplers' guidance uses), trained or not.
            long classes = classEmbeddings!.Value - 1;
            long max = Math.Max(train.Labels.DefaultIfEmpty().Max(), validation.Labels.DefaultIfEmpty().Max());
            if (max >= classes)
                throw new InvalidDataException($"The images have label {max}, but the model's {classEmbeddings} class embeddings leave labels 0..{classes - 1}: " +
                    $"the last embedding ({classes}) stands for 'no label' (classifier-free guidance). Make num_class_embeds the number of classes + 1.");
            if (labelDropout > 0) _nullLabel = classes;
        }
        else if (labelDropout > 0) labelDropout = 0;                                    // nothing to drop on an unconditional model
        (_train, _val, _schedule, _labelDropout, _seed) = (train, validation, schedule, labelDropout, seed);
    }

    public long TrainSamples => _train.Count;
    public long ValidationSamples => _val.Count;
    /// <summary>The held-out images.</summary>
    public ImageSet Validation => _val;
    /// <summary>The label standing for "no label" in training (null without label dropout).</summary>
    public long? NullLabel => _nullLabel;

    /// <summary>Without a stream position, the samples' own indices place them (an image then gets the same noise every epoch).</summary>
    public void FillTrain(ReadOnlySpan<int> samples, Batch batch) => Fill(_train, samples, -1, TrainStream, _labelDropout, batch);

    public void FillTrain(ReadOnlySpan<int> samples, long position, Batch batch) => Fill(_train, samples, position, TrainStream, _labelDropout, batch);

    public void FillValidation(long first, int count, Batch batch)
    {
        var rows = Enumerable.Range(checked((int)first), count).ToArray();
        Fill(_val, rows, first, ValidationStream, 0, batch);
    }

    /// <summary>Sample i draws from the counter hash of (seed, stream, position + i), or of its image index when position is −1.</summary>
    private void Fill(ImageSet from, ReadOnlySpan<int> rows, long position, long stream, double dropout, Batch batch)
    {
        int n = rows.Length, per = from.PixelsPerImage;
        long[] shape = [n, from.Channels, from.Height, from.Width];
        if (!batch.TryGetValue("sample", out var s) || s.Shape[0] != n)
        {
            batch["sample"] = new BatchTensor(new float[n * per], shape);
            batch["target"] = new BatchTensor(new float[n * per], shape);
            batch["timestep"] = new BatchTensor(new long[n], [n]);
            if (_conditional) batch["class_labels"] = new BatchTensor(new long[n], [n]);
        }
        var sample = (float[])batch["sample"].Data;
        var noise = (float[])batch["target"].Data;
        var timesteps = (long[])batch["timestep"].Data;
        for (int i = 0; i < n; i++)
        {
            var rng = new Random(Seeds.Derive(_seed, stream, position < 0 ? rows[i] : position + i));
            timesteps[i] = rng.Next(_schedule.Steps);
            HfWeights.Normal(rng, noise.AsSpan(i * per, per));
            if (_conditional)
            {
                var labels = (long[])batch["class_labels"].Data;
                labels[i] = dropout > 0 && rng.NextDouble() < dropout ? _nullLabel!.Value : from.Labels![rows[i]];
            }
            _schedule.AddNoise(from.Pixels.AsSpan(rows[i] * per, per), noise.AsSpan(i * per, per), timesteps[i], sample.AsSpan(i * per, per));
        }
        batch.Tokens = n;
    }
}

/// <summary>
/// Labelled images as classifier batches for the MLP's graphs: "pixels" (batch, C·H·W) in [0, 1] and "labels" (batch);
/// a seeded shuffle holds <c>validationFraction</c> of the images out. With <c>maxShift</c> &gt; 0 each training image is
/// moved by a random whole number of pixels in [−maxShift, maxShift] along each axis (black filling in), drawn from a
/// counter hash of its position in the run's sample stream (so runs resume exactly); validation images are never moved.
/// </summary>
public sealed class ImageClassificationData : IBatchSource
{
    private readonly ImageSet _train, _val;
    private readonly int _maxShift, _seed;

    public ImageClassificationData(ImageSet images, double validationFraction, int seed = 0, int maxShift = 0)
    {
        if (images.Labels is null) throw new InvalidDataException($"A classifier needs labelled images (a '{ImageSet.LabelsTensor}' tensor).");
        if (validationFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "Must be in (0, 1).");
        if (maxShift < 0 || maxShift >= Math.Min(images.Height, images.Width)) throw new ArgumentOutOfRangeException(nameof(maxShift), maxShift, "The shift must be >= 0 and smaller than the images.");
        (_train, _val) = images.Split(validationFraction, seed);
        (_maxShift, _seed) = (maxShift, seed);
    }

    public long TrainSamples => _train.Count;
    public long ValidationSamples => _val.Count;

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch) => Fill(_train, samples, batch, -1);

    public void FillTrain(ReadOnlySpan<int> samples, long position, Batch batch) => Fill(_train, samples, batch, position);

    public void FillValidation(long first, int count, Batch batch) => Fill(_val, Enumerable.Range(checked((int)first), count).ToArray(), batch, null);

    /// <summary><paramref name="position"/>: the stream position of the first sample (−1: key by image index; null: no shifts).</summary>
    private void Fill(ImageSet from, ReadOnlySpan<int> rows, Batch batch, long? position)
    {
        int n = rows.Length, per = from.PixelsPerImage;
        if (!batch.TryGetValue("labels", out var l) || l.Shape[0] != n)
        {
            batch["pixels"] = new BatchTensor(new float[n * per], [n, per]);
            batch["labels"] = new BatchTensor(new long[n], [n]);
        }
        var pixels = (float[])batch["pixels"].Data;
        var labels = (long[])batch["labels"].Data;
        int h = from.Height, w = from.Width, plane = h * w;
        for (int i = 0; i < n; i++)
        {
            var src = from.Pixels.AsSpan(rows[i] * per, per);
            var dst = pixels.AsSpan(i * per, per);
            int dy = 0, dx = 0;
            if (_maxShift > 0 && position is { } p)
            {
                var rng = new Random(Seeds.Derive(_seed, 0x5817, p < 0 ? rows[i] : p + i));
                (dy, dx) = (rng.Next(-_maxShift, _maxShift + 1), rng.Next(-_maxShift, _maxShift + 1));
            }
            if (dy == 0 && dx == 0) for (int k = 0; k < per; k++) dst[k] = (src[k] + 1) * 0.5f;
            else
            {
                dst.Clear();
                for (int ch = 0; ch < from.Channels; ch++)
                    for (int y = Math.Max(0, dy); y < Math.Min(h, h + dy); y++)
                        for (int x = Math.Max(0, dx); x < Math.Min(w, w + dx); x++)
                            dst[ch * plane + y * w + x] = (src[ch * plane + (y - dy) * w + x - dx] + 1) * 0.5f;
            }
            labels[i] = from.Labels![rows[i]];
        }
        batch.Tokens = n;
    }
}
