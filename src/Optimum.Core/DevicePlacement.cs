using System.Collections.Concurrent;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Optimum.Core;

/// <summary>
/// Where a device's tensors live while a loop runs on it: <see cref="Resident"/> memory for what only feeds the next step
/// (KV caches, encoder outputs, weights bound as inputs), <see cref="Host"/> memory for what C# reads (logits, forecast
/// parameters). On the CPU both are ORT's CPU memory, so nothing changes; on CUDA the resident memory is the GPU's, and a
/// cache bound there is chained from step to step without crossing PCIe. The memory infos are process-wide (one per
/// device, never disposed): callers must not dispose them.
/// </summary>
public readonly record struct DevicePlacement(ExecutionDevice Device)
{
    private static readonly ConcurrentDictionary<int, OrtMemoryInfo> CudaMemory = new();

    /// <summary>The placement of <paramref name="settings"/>' device.</summary>
    public static DevicePlacement Of(SessionSettings settings) => new(settings.Device);

    /// <summary>True when resident memory is the host's (the CPU): tensors there can be read and written from C# as spans.</summary>
    public bool IsHost => !Device.IsCuda;

    /// <summary>
    /// Memory for step-to-step state: the CPU's (<see cref="OrtMemoryInfo.DefaultInstance"/>), or CUDA device
    /// <see cref="ExecutionDevice.Id"/>'s (ORT's CUDA device allocator, as sessions with the CUDA provider allocate it).
    /// </summary>
    public OrtMemoryInfo Resident => IsHost
        ? OrtMemoryInfo.DefaultInstance
        : CudaMemory.GetOrAdd(Device.Id, id => new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, id, OrtMemType.Default));

    /// <summary>Memory C# reads: ORT's CPU memory (a CUDA session copies an output bound here back to the host after its run).</summary>
    public OrtMemoryInfo Host => OrtMemoryInfo.DefaultInstance;

    /// <summary>
    /// A float tensor in resident memory holding <paramref name="host"/>'s values (shape <paramref name="shape"/>), copied
    /// once: on the CPU a view of the array itself (no copy; the array must outlive the value), on CUDA a tensor allocated by
    /// <paramref name="session"/>'s device allocator. The caller disposes the value, then <paramref name="keepAlive"/>
    /// (the allocator on CUDA, null on the CPU) after every value made with it.
    /// On CUDA <paramref name="copy"/> copies a host tensor into a device tensor of the same shape (e.g.
    /// <c>Optimum.Onnx.DeviceCopy.Copy</c>, an Identity session on the device: the classic CUDA provider registers no data
    /// transfer for <c>OrtEnv.CopyTensors</c>).
    /// </summary>
    public OrtValue ToResident(InferenceSession session, float[] host, long[] shape, ref OrtAllocator? keepAlive, Action<OrtValue, OrtValue>? copy)
    {
        var view = OrtValue.CreateTensorValueFromMemory(host, shape);
        if (IsHost) return view;
        using (view)
        {
            // CUDA-only: not run in CI (no GPU). The allocator must outlive the tensors it allocated.
            if (copy is null) throw new ArgumentNullException(nameof(copy), $"A copy to {Device} memory needs a copier.");
            keepAlive ??= new OrtAllocator(session, Resident);
            var device = OrtValue.CreateAllocatedTensorValue(keepAlive, TensorElementType.Float, shape);
            try { copy(view, device); }
            catch
            {
                device.Dispose();
                throw;
            }
            return device;
        }
    }
}
