using Optimum.Core;
using Microsoft.ML.OnnxRuntime;
using Optimum.Onnx;
using Optimum.Training;

namespace Optimum.Cli;

/// <summary>
/// The peak GFLOP/s of ONNX Runtime's float MatMul on this machine at the bench's thread count, measured
/// in the same process as the bench. Every bench that reports a fraction of the peak (GPT-2 train, T5)
/// uses these same shapes, so the fractions compare across models whatever their width.
/// </summary>
public static class MatMulPeak
{
    /// <summary>
    /// (M, K, N): a square 2048 and the two MLP products of the default bench width 384 over 2048 tokens
    /// (batch 8 × seq 256): 384 → 1536 and back. The peak is the best of them.
    /// </summary>
    public static readonly IReadOnlyList<(int M, int K, int N)> Shapes = [(2048, 2048, 2048), (2048, 384, 1536), (2048, 1536, 384)];
    private const int Warmup = 2, Runs = 5;

    /// <summary>Measures every shape (each one a "matmul" measurement in <paramref name="report"/>) and returns the best GFLOP/s.</summary>
    public static double Measure(int threads, BenchReport report, ExecutionDevice device = default)
    {
        double best = 0;
        foreach (var (m, k, n) in Shapes)
        {
            var g = new GraphBuilder("matmul");
            g.Output(g.MatMul(g.Input("a", DType.Float, Shape.Of(m, k)), g.Input("b", DType.Float, Shape.Of(k, n))), "c");
            using var options = new SessionSettings { IntraOpThreads = threads, Device = device }.CreateOptions();
            using var session = new InferenceSession(ModelWriter.ToBytes(g), options);
            var rng = new Random(1);
            float[] Random(int count) => Enumerable.Range(0, count).Select(_ => (float)rng.NextDouble()).ToArray();
            using var a = OrtValue.CreateTensorValueFromMemory(Random(m * k), [m, k]);
            using var b = OrtValue.CreateTensorValueFromMemory(Random(k * n), [k, n]);
            using var c = OrtValue.CreateTensorValueFromMemory(new float[m * n], [m, n]);
            using var binding = session.CreateIoBinding();
            binding.BindInput("a", a);
            binding.BindInput("b", b);
            binding.BindOutput("c", c);
            using var run = new RunOptions();
            var t = StepTimes.Measure(Warmup, Runs, _ => session.RunWithBinding(run, binding));
            double gflops = 2.0 * m * k * n / t.Median / 1e9;
            var r = new Dictionary<string, object> { ["m"] = m, ["k"] = k, ["n"] = n, ["threads"] = threads, ["device"] = device.ToString() };
            t.AddTo(r, "run");
            r["gflops_per_s"] = gflops;
            report.AddSpeed("matmul", r);
            best = Math.Max(best, gflops);
        }
        return best;
    }
}
