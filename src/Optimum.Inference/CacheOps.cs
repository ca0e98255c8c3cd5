using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Core;
using Optimum.Onnx;

namespace Optimum.Inference;

/// <summary>
/// Edits of cached attention tensors (B, heads, T, headSize) as two tiny ONNX graphs run on the model's device, with inputs
/// and outputs in resident memory (<see cref="DevicePlacement.Resident"/>), so that a cache on a GPU is edited there:
/// <see cref="Gather"/> (rows along the batch axis: beam search's reorder) and <see cref="Splice"/> (rows of several
/// caches, each a window of its time axis moved and zero-padded, appended to a cache being built: continuous batching's joins
/// and leaves, T5's cross-attention rows). Only copies and zeros: the results equal the span copies bit for bit.
/// Thread-safe (each call binds its own inputs); owns its sessions, dispose it.
/// </summary>
internal sealed class CacheOps : IDisposable
{
    private readonly InferenceSession _gather, _splice;
    private readonly RunOptions _run = new();

    public CacheOps(SessionSettings settings)
    {
        Placement = DevicePlacement.Of(settings);
        // One thread: a copy is memory-bound, and these sessions must not compete with the model's for cores.
        using var options = (settings with { IntraOpThreads = 1, ProfilePrefix = null, MemoryPattern = false }).CreateOptions();
        _gather = new InferenceSession(ModelWriter.ToBytes(GatherGraph()), options);
        try { _splice = new InferenceSession(ModelWriter.ToBytes(SpliceGraph()), options); }
        catch
        {
            _gather.Dispose();
            throw;
        }
    }

    public DevicePlacement Placement { get; }

    private static Shape Cache(string batch, string time) => Shape.Of(batch, "heads", time, "head_size");

    // y = x[rows]: (R, H, T, D)
    private static GraphBuilder GatherGraph()
    {
        var g = new GraphBuilder("cache_gather");
        var x = g.Input("x", DType.Float, Cache("B", "T"));
        var rows = g.Input("rows", DType.Int64, Shape.Of("R"));
        g.Output(g.Gather(x, rows, 0), "y");
        return g;
    }

    // y = Concat(acc, Where(keep, Pad(Slice(x[rows], starts, ends, axis 2), pads), 0)): (A + R, H, L, D)
    private static GraphBuilder SpliceGraph()
    {
        var g = new GraphBuilder("cache_splice");
        var acc = g.Input("acc", DType.Float, Cache("A", "L"));
        var x = g.Input("x", DType.Float, Cache("B", "T"));
        var rows = g.Input("rows", DType.Int64, Shape.Of("R"));
        var starts = g.Input("starts", DType.Int64, Shape.Of(1));
        var ends = g.Input("ends", DType.Int64, Shape.Of(1));
        var pads = g.Input("pads", DType.Int64, Shape.Of(8));
        var keep = g.Input("keep", DType.Bool, Shape.Of("R", 1, "L", 1));
        var window = g.Slice(g.Gather(x, rows, 0), starts, ends, g.Ints(2));
        var padded = g.Op("Pad", [window, pads, g.Scalar(0)], [(DType.Float, Cache("R", "L"))])[0];
        g.Output(g.Concat(0, acc, g.Where(keep, padded, g.Scalar(0))), "y");
        return g;
    }

    /// <summary>Rows <paramref name="rows"/> of <paramref name="x"/> (resident), as a new resident tensor; the caller disposes it.</summary>
    public OrtValue Gather(OrtValue x, int[] rows)
    {
        using var r = OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(rows, i => (long)i), [rows.Length]);
        using var binding = _gather.CreateIoBinding();
        binding.BindInput("x", x);
        binding.BindInput("rows", r);
        return RunOne(_gather, binding);
    }

    /// <summary>
    /// Appends to <paramref name="acc"/> (A, H, L, D) the rows <paramref name="rows"/> of <paramref name="x"/> (B, H, T, D),
    /// each shifted along the time axis by <paramref name="shift"/> (source position t lands at t + shift) and cut to
    /// [0, L); target positions of row i outside [<paramref name="keepFrom"/>[i], <paramref name="keepTo"/>[i]) are zero.
    /// Returns the new (A + R, H, L, D) tensor in resident memory; the caller disposes it (and still owns its inputs).
    /// </summary>
    public OrtValue Splice(OrtValue acc, OrtValue x, IReadOnlyList<int> rows, int shift, IReadOnlyList<int> keepFrom, IReadOnlyList<int> keepTo)
    {
        var a = acc.GetTensorTypeAndShape().Shape;
        var s = x.GetTensorTypeAndShape().Shape;
        if (a.Length != 4 || s.Length != 4 || a[1] != s[1] || a[3] != s[3])
            throw new ArgumentException($"CacheOps.Splice: cache [{string.Join(", ", a)}] and source [{string.Join(", ", s)}] must both be (batch, heads, time, head_size) with the same heads and head size.");
        long length = a[2], time = s[2];
        long from = Math.Clamp(-shift, 0, time), to = Math.Clamp(length - shift, from, time);  // source window [from, to)
        long before = from + shift, after = length - (to + shift);
        if (to == from) (before, after) = (length, 0);                                         // nothing of the source is in range
        var keep = new bool[rows.Count * length];
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i] < 0 || rows[i] >= s[0]) throw new ArgumentOutOfRangeException(nameof(rows), rows[i], $"CacheOps.Splice: row {rows[i]} of a source of {s[0]} rows.");
            for (long t = Math.Max(0, keepFrom[i]); t < Math.Min(length, keepTo[i]); t++) keep[i * length + t] = true;
        }
        using var rowsV = OrtValue.CreateTensorValueFromMemory(rows.Select(i => (long)i).ToArray(), [rows.Count]);
        using var startsV = OrtValue.CreateTensorValueFromMemory(new[] { from }, [1]);
        using var endsV = OrtValue.CreateTensorValueFromMemory(new[] { to }, [1]);
        using var padsV = OrtValue.CreateTensorValueFromMemory(new long[] { 0, 0, before, 0, 0, 0, after, 0 }, [8]);
        using var keepV = OrtValue.CreateTensorValueFromMemory(keep, [rows.Count, 1, length, 1]);
        using var binding = _splice.CreateIoBinding();
        binding.BindInput("acc", acc);
        binding.BindInput("x", x);
        binding.BindInput("rows", rowsV);
        binding.BindInput("starts", startsV);
        binding.BindInput("ends", endsV);
        binding.BindInput("pads", padsV);
        binding.BindInput("keep", keepV);
        return RunOne(_splice, binding);
    }

    /// <summary>
    /// A new (rows, heads, <paramref name="length"/>, headSize) cache in resident memory whose row i is row <c>Row</c> of
    /// <c>Source</c> shifted by <c>Shift</c> along time, zero outside [<c>KeepFrom</c>, <c>KeepTo</c>). Consecutive rows of
    /// one source and shift are spliced in one run; the caller disposes the result and still owns the sources.
    /// </summary>
    public OrtValue Assemble(IReadOnlyList<(OrtValue Source, int Row, int Shift, int KeepFrom, int KeepTo)> rows, int heads, long length, int headSize)
    {
        var acc = Empty(heads, length, headSize);
        try
        {
            for (int i = 0; i < rows.Count;)
            {
                int j = i;
                while (j < rows.Count && rows[j].Source == rows[i].Source && rows[j].Shift == rows[i].Shift) j++;
                var run = Enumerable.Range(i, j - i).Select(r => rows[r]).ToArray();
                var next = Splice(acc, rows[i].Source, [.. run.Select(r => r.Row)], rows[i].Shift, [.. run.Select(r => r.KeepFrom)], [.. run.Select(r => r.KeepTo)]);
                acc.Dispose();
                acc = next;
                i = j;
            }
            return acc;
        }
        catch
        {
            acc.Dispose();
            throw;
        }
    }

    /// <summary>Makes <paramref name="ops"/> on first use when <paramref name="settings"/> edit caches with graphs (thread-safe); null otherwise.</summary>
    public static CacheOps? For(SessionSettings settings, ref CacheOps? ops)
    {
        if (!settings.EditsCacheWithGraphs) return null;
        if (Volatile.Read(ref ops) is { } made) return made;
        var fresh = new CacheOps(settings);
        if (Interlocked.CompareExchange(ref ops, fresh, null) is { } other)
        {
            fresh.Dispose();
            return other;
        }
        return fresh;
    }

    /// <summary>An empty (0, <paramref name="heads"/>, <paramref name="length"/>, <paramref name="headSize"/>) cache to splice rows onto (no memory: it may live on the host).</summary>
    public static OrtValue Empty(int heads, long length, int headSize) =>
        OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [0, heads, length, headSize]);

    /// <summary>Gather and Splice runs so far, process-wide: tests check that the graph path was taken.</summary>
    internal static long Gathers, Splices;

    private OrtValue RunOne(InferenceSession session, OrtIoBinding binding)
    {
        binding.BindOutputToDevice("y", Placement.Resident);
        session.RunWithBinding(_run, binding);
        Interlocked.Increment(ref session == _gather ? ref Gathers : ref Splices);
        // The list's only value is the caller's now: disposing the list would dispose it.
        return binding.GetOutputValues()[0];
    }

    public void Dispose()
    {
        _gather.Dispose();
        _splice.Dispose();
        _run.Dispose();
    }
}
