using Microsoft.ML.OnnxRuntime;

namespace Optimum.Training;

/// <summary>
/// An <see cref="OrtIoBinding"/> of a session that keeps its inputs by name. On a device ONNX Runtime copies a host input when
/// it is bound (IoBinding.BindInput), not when the graph runs, so <see cref="Run"/> binds every input again first: inputs
/// whose host memory changes between runs (a refilled batch, a seed, a loss scale, an optimizer's scalars, parameters kept on
/// the host) are then seen as they are now. On the CPU a bound input is read where it is, and binding once is enough.
/// Owns the binding, not the values.
/// </summary>
internal sealed class RunBinding(InferenceSession session, bool device) : IDisposable
{
    private readonly OrtIoBinding _binding = session.CreateIoBinding();
    private readonly Dictionary<string, OrtValue> _inputs = new(StringComparer.Ordinal);

    /// <summary>Binds <paramref name="value"/> as input <paramref name="name"/> (replacing what was bound under it).</summary>
    public void BindInput(string name, OrtValue value)
    {
        _binding.BindInput(name, value);
        _inputs[name] = value;
    }

    public void BindOutput(string name, OrtValue value) => _binding.BindOutput(name, value);

    /// <summary>Runs the session over the bound values (on a device, the inputs bound again first).</summary>
    public void Run(RunOptions options)
    {
        if (device) foreach (var (name, value) in _inputs) _binding.BindInput(name, value);
        session.RunWithBinding(options, _binding);
    }

    public void Dispose() => _binding.Dispose();
}
