using Optimum.Core;
using Optimum.Onnx;

namespace Optimum.Training;

/// <summary>
/// Training and eval graphs built in memory from a model definition, for a run whose graphs are not the model folder's
/// files: mixed precision (<see cref="TrainerOptions.Precision"/> bf16/fp16) rebuilds the folder's definition with the graph
/// builder's autocast casts and, for fp16, the loss-scale input. Parameters (names, shapes, order) must be the folder's,
/// so the same weights, checkpoints and exports serve every precision.
/// </summary>
public sealed record TrainingGraphs(byte[] Training, byte[] Eval, IReadOnlyList<string> TrainInputs, IReadOnlyList<string> EvalInputs,
    IReadOnlySet<string> TrainOutputs, IReadOnlyList<ParameterInfo> Parameters, TrainingPrecision Precision)
{
    /// <summary>
    /// The graphs of <paramref name="define"/> at <paramref name="precision"/> (bf16 or fp16): MatMul and Gemm in the 16-bit type
    /// (<see cref="MixedPrecision.Apply"/>); fp16's training graph takes <see cref="GraphInputs.LossScale"/>.
    /// </summary>
    public static TrainingGraphs Build(string modelType, Func<GraphBuilder, bool, ModelOutputs> define, TrainingPrecision precision)
    {
        if (!precision.IsMixed())
            throw new ArgumentException($"--precision {EnumNames.Name(precision)} runs the model folder's float32 graphs; only bf16 and fp16 graphs are built.", nameof(precision));
        var type = precision == TrainingPrecision.Fp16 ? DType.Float16 : DType.BFloat16;
        var mixed = MixedPrecision.Apply(define, type);
        var suffix = "_" + EnumNames.Name(precision);
        var train = TrainingGraph.BuildTraining(modelType + "_training" + suffix, mixed, lossScale: precision == TrainingPrecision.Fp16);
        var eval = TrainingGraph.BuildEval(modelType + "_eval" + suffix, mixed);
        static string[] DataInputs(GraphBuilder g) => g.Inputs.Where(i => i.Kind == ValueKind.Input).Select(i => i.Name).ToArray();
        return new TrainingGraphs(ModelWriter.ToBytes(train), ModelWriter.ToBytes(eval), DataInputs(train), DataInputs(eval),
            train.Outputs.Select(o => o.Name).ToHashSet(StringComparer.Ordinal),
            train.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.Select(d => d.Value).ToArray()) { Trainable = !train.IsBuffer(p) }).ToArray(),
            precision);
    }

    /// <summary>Refuses graphs whose parameters differ from <paramref name="declared"/> (the model folder's), naming the first difference.</summary>
    public void CheckParameters(IReadOnlyList<ParameterInfo> declared, string modelDir)
    {
        for (int i = 0; i < Math.Max(declared.Count, Parameters.Count); i++)
        {
            var (a, b) = (i < declared.Count ? declared[i] : null, i < Parameters.Count ? Parameters[i] : null);
            if (a is null || b is null || a.Name != b.Name || !a.Shape.SequenceEqual(b.Shape) || a.Trainable != b.Trainable)
                throw new InvalidDataException($"The {EnumNames.Name(Precision)} graphs built from {modelDir}'s definition differ from its config.json at parameter {i}: "
                    + $"{Describe(b)} built, {Describe(a)} declared. Re-create the model folder with this version (optimum-net init / import).");
        }
        static string Describe(ParameterInfo? p) => p is null ? "none" : $"{p.Name} [{string.Join(", ", p.Shape)}]{(p.Trainable ? "" : " (buffer)")}";
    }
}
