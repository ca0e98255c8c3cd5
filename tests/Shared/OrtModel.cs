using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Onnx;

namespace Optimum.Tests;

/// <summary>A tensor fed to or read from ONNX Runtime in tests: values as doubles plus the element type.</summary>
public sealed record HostTensor(double[] Values, long[] Dims, DType Type = DType.Double);

/// <summary>An ORT session over an emitted graph, for tests. Owns the session.</summary>
public sealed class OrtModel : IDisposable
{
    private readonly InferenceSession _session;

    public OrtModel(GraphBuilder graph) : this(ModelWriter.ToBytes(graph)) { }

    public OrtModel(byte[] model, GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, GraphOptimizationLevel = level };
        _session = new InferenceSession(model, options);
    }

    public IReadOnlyList<string> OutputNames => _session.OutputNames;

    public Dictionary<string, double[]> Run(IReadOnlyDictionary<string, HostTensor> feeds, IEnumerable<string>? outputs = null)
    {
        var names = feeds.Keys.ToArray();
        var values = names.Select(n => ToOrt(feeds[n])).ToArray();
        try
        {
            var outNames = (outputs ?? _session.OutputNames).ToArray();
            // Held in a variable for the whole run: an inline `new RunOptions()` can be finalized while ORT still reads it
            // (the call passes only its handle), which crashed the test host now and then inside ORT (a freed config map).
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, names, values, outNames);
            var r = new Dictionary<string, double[]>();
            for (int i = 0; i < outNames.Length; i++) r[outNames[i]] = FromOrt(results[i]);
            return r;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static OrtValue ToOrt(HostTensor t) => t.Type switch
    {
        DType.Double => OrtValue.CreateTensorValueFromMemory(t.Values.ToArray(), t.Dims),
        DType.Float => OrtValue.CreateTensorValueFromMemory(t.Values.Select(v => (float)v).ToArray(), t.Dims),
        DType.Int64 => OrtValue.CreateTensorValueFromMemory(t.Values.Select(v => (long)v).ToArray(), t.Dims),
        _ => throw new NotSupportedException(t.Type.ToString()),
    };

    private static double[] FromOrt(OrtValue v) => v.GetTensorTypeAndShape().ElementDataType switch
    {
        TensorElementType.Double => v.GetTensorDataAsSpan<double>().ToArray(),
        TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray().Select(f => (double)f).ToArray(),
        TensorElementType.Int64 => v.GetTensorDataAsSpan<long>().ToArray().Select(f => (double)f).ToArray(),
        TensorElementType.Bool => v.GetTensorDataAsSpan<bool>().ToArray().Select(f => f ? 1.0 : 0.0).ToArray(),
        var t => throw new NotSupportedException(t.ToString()),
    };

    public void Dispose() => _session.Dispose();
}

/// <summary>Seeded random numbers for test inputs.</summary>
public static class Rand
{
    public static double Normal(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
}

/// <summary>Paths in the repository checkout and the shared fixtures beside it.</summary>
public static class Repo
{
    public static string Root { get; } = Find();

    private static string Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(System.IO.Path.Combine(d.FullName, "Optimum.Net.sln"))) return d.FullName;
        throw new DirectoryNotFoundException($"No Optimum.Net.sln above {AppContext.BaseDirectory}.");
    }

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    /// <summary>A Hugging Face fixture folder (../shared/fixtures/hf/NAME, or $OPTIMUM_FIXTURES/NAME); missing fixtures fail the test.</summary>
    public static string Fixture(string name)
    {
        var root = Environment.GetEnvironmentVariable("OPTIMUM_FIXTURES") ?? System.IO.Path.Combine(Root, "..", "shared", "fixtures", "hf");
        var dir = System.IO.Path.GetFullPath(System.IO.Path.Combine(root, name));
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"Fixture folder '{dir}' is missing; the tests expect ../shared/fixtures/hf beside the checkout (or OPTIMUM_FIXTURES).");
        return dir;
    }

    public static string TempDir()
    {
        var d = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "optimum-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}

/// <summary>Comparisons of parameter sets.</summary>
public static class Diff
{
    /// <summary>The largest |a - b| / max(|a|, floor) over all elements: relative, with values near zero compared absolutely.</summary>
    public static double MaxRelative(float[][] a, float[][] b, double floor) =>
        a.Zip(b).SelectMany(p => p.First.Zip(p.Second, (x, y) => Math.Abs(x - y) / Math.Max(Math.Abs(x), floor))).Max();
}
