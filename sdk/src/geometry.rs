//! Domain types for boxes, points and detected faces.

use serde::{Deserialize, Serialize};

/// A point in image pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal coordinate (pixels, left to right).
    pub x: f32,
    /// Vertical coordinate (pixels, top to bottom).
    pub y: f32,
}

/// An axis-aligned box `[x1, y1, x2, y2]` in pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BBox {
    /// A box from its corners.
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }
    /// Width (may be negative for a degenerate box).
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }
    /// Height (may be negative for a degenerate box).
    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }
    /// Area with MTCNN's inclusive-pixel convention (`(w + 1) * (h + 1)`).
    pub fn area_inclusive(&self) -> f32 {
        (self.width() + 1.0).max(0.0) * (self.height() + 1.0).max(0.0)
    }
    /// Area with the continuous convention (`w * h`), 0 for a degenerate box.
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
    /// Centre of the box.
    pub fn center(&self) -> Point {
        Point {
            x: (self.x1 + self.x2) * 0.5,
            y: (self.y1 + self.y2) * 0.5,
        }
    }
    /// Intersection over union (continuous convention), in `[0, 1]`.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
    /// As an array `[x1, y1, x2, y2]`.
    pub fn to_array(&self) -> [f32; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }
}

/// The five MTCNN landmarks: left eye, right eye, nose, left and right mouth corner
/// (left/right as seen in the image).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Landmarks(pub [Point; 5]);

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Face box in the frame's pixel coordinates.
    pub bbox: BBox,
    /// ONet face probability.
    pub score: f32,
    /// Five facial landmarks.
    pub landmarks: Landmarks,
}
